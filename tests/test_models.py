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


def _output_shape(name, size, num_classes=7, batch=2, **kwargs):
  model = stats.abstract_model(name, num_classes, **kwargs)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
  return out.shape


@pytest.mark.parametrize('name', PUBLISHED)
def test_exact_parameter_count(name):
  assert stats.count_params(stats.abstract_model(name)) == models.get_info(name).params


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


@pytest.mark.parametrize('name,gmacs', [('alexnet', 0.714), ('alexnet2012', 0.724)])
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
