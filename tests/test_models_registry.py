"""Model zoo: exact parameter counts, shapes, errors, and train/eval behaviour.

Counts and shapes use abstract evaluation (no compile); behaviour runs on the tiny variants.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import stats

PUBLISHED = [n for n in models.list_models() if models.get_info(n).params is not None]

# Parameter counts at 1000 classes, written here from independent sources (not from the registry):
# TV = torchvision 0.29 `num_params` in the IMAGENET1K_V1 weights' meta; HAND = counted by hand from
# the paper's layer table (layer by layer: weights + biases [+ BN scale/offset]).
_TV = {
    'alexnet': 61_100_840, 'vgg11': 132_863_336, 'vgg11_bn': 132_868_840, 'vgg13': 133_047_848,
    'vgg13_bn': 133_053_736, 'vgg16': 138_357_544, 'vgg16_bn': 138_365_992,
    'vgg19': 143_667_240, 'vgg19_bn': 143_678_248, 'resnet18': 11_689_512,
    'resnet34': 21_797_672, 'resnet50': 25_557_032, 'resnet101': 44_549_160,
    'resnet152': 60_192_808, 'googlenet': 6_624_904, 'inception_v3': 27_161_264,
    'squeezenet1_0': 1_248_424, 'squeezenet1_1': 1_235_496, 'mobilenet_v2': 3_504_872,
    'densenet121': 7_978_856,
}
PARAMS = {
    **_TV,
    # HAND, Krizhevsky et al. 2012 Fig. 2 (227 px; conv2/4/5 see half their inputs):
    # conv1 11*11*3*96+96, conv2 5*5*48*256+256, conv3 3*3*256*384+384, conv4 3*3*192*384+384,
    # conv5 3*3*192*256+256, fc6 9216*4096+4096, fc7 4096*4096+4096, fc8 4096*1000+1000.
    'alexnet2012': (11 * 11 * 3 * 96 + 96 + 5 * 5 * 48 * 256 + 256 + 3 * 3 * 256 * 384 + 384
                    + 3 * 3 * 192 * 384 + 384 + 3 * 3 * 192 * 256 + 256 + 9216 * 4096 + 4096
                    + 4096 * 4096 + 4096 + 4096 * 1000 + 1000),
    # HAND: torchvision alexnet + BatchNorm scale/offset after 5 convs and 2 hidden FC layers.
    'bn_alexnet': 61_100_840 + 2 * (64 + 192 + 384 + 256 + 256 + 4096 + 4096),
    # HAND, Caffe nin_imagenet: mlpconv (11x11/4 96, 96, 96), (5x5 256, 256, 256),
    # (3x3 384, 384, 384), (3x3 1024, 1024, 1000), every conv with a bias.
    'nin': (11 * 11 * 3 * 96 + 96 + 2 * (96 * 96 + 96) + 5 * 5 * 96 * 256 + 256
            + 2 * (256 * 256 + 256) + 3 * 3 * 256 * 384 + 384 + 2 * (384 * 384 + 384)
            + 3 * 3 * 384 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 1000 + 1000),
    # HAND, imagenet-multiGPU.torch ninbn.lua: NiN's convs with BN (scale/offset) after each, the
    # last 1x1 giving 1024 channels, then Linear(1024 -> 1000).
    'bn_nin': (11 * 11 * 3 * 96 + 96 + 2 * (96 * 96 + 96) + 5 * 5 * 96 * 256 + 256
               + 2 * (256 * 256 + 256) + 3 * 3 * 256 * 384 + 384 + 2 * (384 * 384 + 384)
               + 3 * 3 * 384 * 1024 + 1024 + 2 * (1024 * 1024 + 1024)
               + 2 * 3 * (96 + 256 + 384 + 1024) + 1024 * 1000 + 1000),
    # He et al. 2016 v1 moves a stride, not a weight: the same count as torchvision's resnet50.
    'resnet50_v1': 25_557_032,
    # HAND: googlenet (TV) with the paper's true 5x5 branch (GoogLeNet Table 1) instead of
    # torchvision's 3x3: + (25 - 9) * (#5x5 reduce) * (#5x5) over the nine inception modules.
    'googlenet_paper': 6_624_904 + 16 * (16 * 32 + 32 * 96 + 16 * 48 + 24 * 64 + 24 * 64
                                         + 32 * 64 + 32 * 128 + 32 * 128 + 48 * 128),
    # timm's port of the TF-slim inception_v4 checkpoint (timm inception_v4 model card).
    'inception_v4': 42_679_816,
    # REGRESSION PIN: ENet's ImageNet classifier is ours (enet.py states every choice); no
    # independent count exists. These numbers were read from this code.
    'enet': 467_156, 'enet_v2': 527_764,
}


def _output_shape(name, size, num_classes=7, batch=2, **kwargs):
  model = stats.abstract_model(name, num_classes, **kwargs)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
  return out.shape


@pytest.mark.parametrize('name', PUBLISHED)
def test_exact_parameter_count(name):
  assert stats.count_params(stats.abstract_model(name)) == PARAMS[name]
  assert models.get_info(name).params == PARAMS[name]  # what the registry and README print


@pytest.mark.parametrize('name', models.list_models())
def test_output_shape_at_default_and_minimum_size(name):
  info = models.get_info(name)
  assert _output_shape(name, info.input_size) == (2, 7)
  assert _output_shape(name, info.min_input_size) == (2, 7)


@pytest.mark.parametrize('name', models.list_models())
def test_too_small_input_names_model_and_minimum(name):
  info = models.get_info(name)
  with pytest.raises(ValueError, match=rf'{name}.*at least {info.min_input_size}x{info.min_input_size}'):
    _output_shape(name, info.min_input_size - 1)


def test_unknown_model_lists_known_ones():
  with pytest.raises(KeyError, match='known models: .*alexnet2012'):
    models.create('alexnet2013')


# alexnet: torchvision's `_ops` (IMAGENET1K_V1 meta). alexnet2012, by hand from Fig. 2 at 227 px:
# conv1 55^2*363*96, conv2 27^2*1200*256, conv3 13^2*2304*384, conv4 13^2*1728*384,
# conv5 13^2*1728*256, fc 9216*4096 + 4096^2 + 4096*1000 = 0.7244 G.
@pytest.mark.parametrize('name,gmacs', [
    ('alexnet', 0.714),
    ('alexnet2012', (55**2 * 363 * 96 + 27**2 * 1200 * 256 + 13**2 * 2304 * 384
                     + 13**2 * 1728 * 384 + 13**2 * 1728 * 256
                     + 9216 * 4096 + 4096**2 + 4096 * 1000) / 1e9)])
def test_macs_match_reference(name, gmacs):
  info = models.get_info(name)
  macs = stats.count_macs(stats.abstract_model(name), info.input_size) / 1e9
  assert macs == pytest.approx(gmacs, rel=0.01)


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
