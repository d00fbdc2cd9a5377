"""Layers and blocks against the formulas of their papers (or of PyTorch), on small inputs computed
eagerly: LRN, ceil-mode and adaptive pooling, GoogLeNet's input transform, AlexNet 2012's towers,
ENet's downsampling shortcut."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import enet, googlenet


def test_lrn_matches_the_paper_formula():
  x = jax.random.normal(jax.random.key(1), (1, 2, 2, 8))
  got = models.layers.local_response_norm(x, groups=2)
  xs = np.asarray(x)
  want = np.empty_like(xs)
  for g in range(2):
    for c in range(4):
      lo, hi = max(0, c - 2), min(4, c + 3)
      s = (xs[..., g * 4 + lo: g * 4 + hi] ** 2).sum(-1)
      want[..., g * 4 + c] = xs[..., g * 4 + c] / (2.0 + 1e-4 * s) ** 0.75
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize('size,kernel,stride,padding,want', [
    (112, 3, 2, 0, 56),   # GoogLeNet: ceil gives 56 where floor gives 55
    (14, 2, 2, 0, 7),
    (5, 2, 2, 1, 3),      # a last window starting in the padding is dropped (4 -> 3)
])
def test_ceil_mode_pool_sizes(size, kernel, stride, padding, want):
  x = jnp.zeros((1, size, size, 1))
  assert models.layers.max_pool(x, kernel, stride, padding, ceil_mode=True).shape[1] == want


def test_adaptive_avg_pool_bins_like_pytorch():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  got = models.layers.adaptive_avg_pool(jnp.tile(x, (1, 1, 3, 1)), (3, 3))[0, :, 0, 0]
  np.testing.assert_allclose(got, [0.5, 2.0, 3.5])  # bins [0,2) [1,4) [3,5)


def test_transform_input_matches_torchvision_formula():
  x = jax.random.normal(jax.random.key(2), (1, 2, 2, 3))
  got = googlenet.transform_input(x)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  for ch in range(3):
    want = x[..., ch] * (std[ch] / 0.5) + (mean[ch] - 0.5) / 0.5
    np.testing.assert_allclose(got[..., ch], want, rtol=1e-6)


class TestAlexNet2012Towers:
  """The grouped convs keep the two towers apart up to conv3 (paper Fig. 2)."""

  def test_changing_one_tower_leaves_the_other_untouched(self):
    model = models.create('alexnet2012_tiny', 10)
    x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3))
    before = model.towers(x)
    c1 = model.conv1.kernel.value.shape[-1]
    model.conv1.kernel.value = model.conv1.kernel.value.at[..., : c1 // 2].add(1.0)
    after = model.towers(x)
    half = before.shape[-1] // 2
    np.testing.assert_array_equal(before[..., half:], after[..., half:])
    assert not np.allclose(before[..., :half], after[..., :half])


def test_enet_downsampling_bottleneck_pads_the_shortcut_with_zero_channels():
  """Fig. 2b: with the main branch zeroed, output = PReLU(max-pool(x) + appended zero channels)."""
  block = enet.Bottleneck(4, 16, 'downsampling', dropout=0.5, rngs=nnx.Rngs(0))
  block.bn3.scale.value = jnp.zeros_like(block.bn3.scale.value)
  block.bn3.bias.value = jnp.zeros_like(block.bn3.bias.value)
  x = jax.random.normal(jax.random.key(1), (1, 6, 6, 4))
  y = np.asarray(block(x))
  pooled = np.asarray(x).reshape(1, 3, 2, 3, 2, 4).max(axis=(2, 4))
  np.testing.assert_allclose(y[..., :4], np.where(pooled >= 0, pooled, 0.25 * pooled), rtol=1e-6)
  np.testing.assert_array_equal(y[..., 4:], 0.0)
