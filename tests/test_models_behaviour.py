"""Train versus eval behaviour: BatchNorm statistics, dropout draws, auxiliary heads, determinism.

Real compute on small models: the tiny NiN, VGG, ResNet, GoogLeNet and Inception v3 are compiled
once per mode (module-scoped fixtures) in NNX functional form and compared across calls; MobileNetV2
and an ENet bottleneck run eval then train twice in one compiled call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import enet, stats

NUM_CLASSES = 7


class Compiled:
  """A model split once into (graphdef, state) with jitted train/eval forwards returning state."""

  def __init__(self, name, size, **kwargs):
    # Values drawn with numpy into the abstract model: on a 2-core CPU, compiling the models' own
    # initialisers (eagerly or in one jit) takes minutes, the forward passes seconds.
    self.graphdef, state = nnx.split(stats.abstract_model(name, NUM_CLASSES, **kwargs))
    self.state = jax.tree_util.tree_map_with_path(_fill, state)
    self.x = jax.random.normal(jax.random.key(1), (4, size, size, 3))

    @functools.partial(jax.jit, static_argnames='train')
    def forward(state, x, train):
      model = nnx.merge(self.graphdef, state)
      out = model(x, train=train)
      return out, nnx.state(model)

    self.forward = forward

  def __call__(self, state, train):
    return self.forward(state, self.x, train=train)


def _fill(path, leaf, rng=np.random.default_rng(0)):
  """A value for one abstract leaf: He-normal kernels, BN scale/var 1, other floats 0, fresh keys."""
  name = path[-2].key
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    return jax.random.key(int(rng.integers(1 << 31)))
  if name == 'kernel':
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), leaf.dtype)
  return jnp.full(leaf.shape, 1 if name in ('scale', 'var') else 0, leaf.dtype)


# name, input size, constructor overrides, has BatchNorm, has dropout.
FAMILIES = {
    'nin': ('nin_tiny', 64, {}, False, True),
    'bn_nin': ('bn_nin_tiny', 32, {}, True, False),
    'vgg': ('vgg_tiny', 32, {}, True, True),
    'resnet': ('resnet_tiny', 32, {}, True, False),
    'googlenet': ('googlenet_tiny', 32, {'aux_logits': True}, True, True),
    'inception_v3': ('inception_v3_tiny', 299, {'aux_logits': True}, True, True),
}


# GoogLeNet and Inception v3 take ~1 min each to compile on a 2-core CPU.
@pytest.fixture(scope='module', params=[
    pytest.param(f, marks=pytest.mark.slow) if f in ('googlenet', 'inception_v3') else f
    for f in FAMILIES])
def family(request):
  name, size, kwargs, has_bn, has_dropout = FAMILIES[request.param]
  compiled = Compiled(name, size, **kwargs)
  eval_out, eval_state = compiled(compiled.state, train=False)
  train_out, train_state = compiled(compiled.state, train=True)
  return dict(family=request.param, c=compiled, has_bn=has_bn, has_dropout=has_dropout,
              eval_out=eval_out, eval_state=eval_state, train_out=train_out,
              train_state=train_state)


def _logits(out):
  return out[0] if isinstance(out, tuple) else out


def _stats_of(f, state):
  """The BatchNorm running statistics in `state`, as a list of arrays."""
  return jax.tree.leaves(nnx.split(nnx.merge(f['c'].graphdef, state), nnx.BatchStat, ...)[1])


def _leaves(state):
  """All arrays of `state`, RNG keys as their raw data."""
  return [jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
          for a in jax.tree.leaves(state)]


def test_eval_is_deterministic_and_keeps_batch_stats(family):
  c = family['c']
  again, state = c(family['eval_state'], train=False)
  np.testing.assert_array_equal(family['eval_out'], again)
  assert family['eval_out'].shape == (4, NUM_CLASSES)
  assert family['eval_out'].dtype == jnp.float32
  before, after = _leaves(c.state), _leaves(state)
  assert len(before) == len(after)
  for b, a in zip(before, after):
    np.testing.assert_array_equal(b, a)


def test_train_mode_updates_batch_stats(family):
  before = _stats_of(family, family['c'].state)
  after = _stats_of(family, family['train_state'])
  if not family['has_bn']:
    assert before == []
    return
  assert before and len(before) == len(after)
  changed = [not np.allclose(b, a) for b, a in zip(before, after)]
  assert all(changed), f'{changed.count(False)} of {len(changed)} BatchNorm statistics unchanged'


def test_dropout_draws_differ_in_train_mode(family):
  c = family['c']
  first = _logits(family['train_out'])
  second = _logits(c(family['train_state'], train=True)[0])
  replay = _logits(c(c.state, train=True)[0])
  np.testing.assert_allclose(first, replay, rtol=1e-5, atol=1e-6)  # same RNG state, same draw
  if family['has_dropout']:
    assert np.any(first != second), 'two dropout draws gave the same logits'
  else:
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_aux_heads_only_in_train_mode(family):
  if family['family'] not in ('googlenet', 'inception_v3'):
    pytest.skip('no auxiliary heads')
  logits, aux = family['train_out']
  assert logits.shape == (4, NUM_CLASSES)
  assert len(aux) == (2 if family['family'] == 'googlenet' else 1)
  for a in aux:
    assert a.shape == (4, NUM_CLASSES) and a.dtype == jnp.float32
  assert isinstance(family['eval_out'], jax.Array)


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
