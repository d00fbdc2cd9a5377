"""SqueezeNet, DenseNet, MobileNetV2, Inception-v4, ENet: op counts, layout, train/eval behaviour.

Exact parameter counts and shapes of every registered model are in test_models.py. Here: GMACs
against torchvision's `_ops` (abstract trace, no compile), Inception-v4's grid sizes against the
paper, and real computation on small inputs for BatchNorm/dropout behaviour (eager, no compile).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import enet, stats


@pytest.mark.parametrize('name,gmacs', [
    ('squeezenet1_0', 0.819), ('squeezenet1_1', 0.349), ('densenet121', 2.834),
    ('mobilenet_v2', 0.301)])
def test_macs_match_torchvision(name, gmacs):
  """torchvision 0.29.1's `meta['_ops']` of the IMAGENET1K_V1 weights (`models/squeezenet.py`,
  `densenet.py`, `mobilenetv2.py`): GMACs at 224 px, multiplications of convs and matmuls only."""
  macs = stats.count_macs(stats.abstract_model(name), models.get_info(name).input_size) / 1e9
  assert macs == pytest.approx(gmacs, rel=0.01)


def test_inception_v4_grid_sizes_match_the_paper():
  """Fig. 9: 299 -> stem 35x35x384 -> 4xA 35x35x384 -> Reduction-A 17x17x1024 -> 7xB 17x17x1024 ->
  Reduction-B 8x8x1536 -> 3xC 8x8x1536; this pins every 'V' (valid) padding of Figs. 3, 7 and 8."""
  model = stats.abstract_model('inception_v4')
  graphdef, state = nnx.split(model)

  def features(state, x):
    out = []
    for block in nnx.merge(graphdef, state).features:
      x = block(x)
      out.append(x)
    return out

  outs = jax.eval_shape(features, state, jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  got = [o.shape[1:] for o in outs]
  assert got[5] == (35, 35, 384)           # after Mixed5a: end of the stem (Fig. 3)
  assert got[9] == (35, 35, 384)           # 4 x Inception-A
  assert got[10] == (17, 17, 1024)         # Reduction-A
  assert got[17] == (17, 17, 1024)         # 7 x Inception-B
  assert got[18] == (8, 8, 1536)           # Reduction-B
  assert got[21] == (8, 8, 1536)           # 3 x Inception-C
  assert len(got) == 22


def _run_eval_then_train_twice(module, x):
  """One compiled call: eval output, BN statistics after it, two train outputs, final statistics."""
  graphdef, state = nnx.split(module)

  @jax.jit
  def run(state, x):
    m = nnx.merge(graphdef, state)
    out_eval = m(x)
    stats_eval = nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))  # a snapshot, not references
    out_train = (m(x, train=True), m(x, train=True))
    return out_eval, stats_eval, out_train, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))

  before = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
  return before, run(state, x)


def _check_train_eval(before, results):
  out_eval, stats_eval, (train_a, train_b), stats_train = results
  jax.tree.map(np.testing.assert_array_equal, stats_eval, before)   # eval never updates BN
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), stats_train, before)
  assert jax.tree.leaves(changed) and all(jax.tree.leaves(changed))  # train updates every BN
  assert not np.allclose(train_a, train_b)                          # a fresh dropout mask per call
  return out_eval


def test_mobilenet_v2_train_and_eval_behaviour():
  model = models.create('mobilenet_v2_tiny', 5)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  out_eval = _check_train_eval(*_run_eval_then_train_twice(model, x))
  assert out_eval.shape == (2, 5) and out_eval.dtype == jnp.float32
  np.testing.assert_array_equal(out_eval, model(x))  # eval is deterministic (here: eager vs jit)


@pytest.fixture(scope='module')
def bottleneck():
  """A small ENet downsampling bottleneck (4 -> 16 channels) with a high spatial-dropout rate."""
  return enet.Bottleneck(4, 16, 'downsampling', dropout=0.5, rngs=nnx.Rngs(0))


def test_enet_bottleneck_train_and_eval_behaviour(bottleneck):
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
  _check_train_eval(*_run_eval_then_train_twice(bottleneck, x))


def test_enet_spatial_dropout_drops_whole_channels(bottleneck):
  y = bottleneck.dropout(jnp.ones((4, 6, 6, 8)), deterministic=False)
  per_channel = np.asarray(y).transpose(0, 3, 1, 2).reshape(32, 36)
  assert np.all(per_channel == per_channel[:, :1])          # constant over H and W
  assert set(np.unique(per_channel)) == {0.0, 2.0}          # dropped, or kept and rescaled


def test_enet_downsampling_bottleneck_pads_the_shortcut_with_zero_channels(bottleneck):
  """Fig. 2b: with the main branch zeroed, output = PReLU(max-pool(x) + appended zero channels)."""
  graphdef, state = nnx.split(bottleneck)
  block = nnx.merge(graphdef, state)  # a copy: the fixture stays untouched
  block.bn3.scale.value = jnp.zeros_like(block.bn3.scale.value)
  block.bn3.bias.value = jnp.zeros_like(block.bn3.bias.value)
  x = jax.random.normal(jax.random.key(1), (1, 6, 6, 4))
  y = np.asarray(block(x))
  pooled = np.asarray(x).reshape(1, 3, 2, 3, 2, 4).max(axis=(2, 4))
  np.testing.assert_allclose(y[..., :4], np.where(pooled >= 0, pooled, 0.25 * pooled), rtol=1e-6)
  np.testing.assert_array_equal(y[..., 4:], 0.0)


@pytest.mark.parametrize('size', [9, 224, 225])
def test_enet_accepts_odd_sizes(size):
  """The initial block's max-pool uses ceil mode, so the concat also works for odd sizes."""
  model = stats.abstract_model('enet', 5)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).initial(x), state, x)
  assert out.shape == (1, -(-size // 2), -(-size // 2), 16)
