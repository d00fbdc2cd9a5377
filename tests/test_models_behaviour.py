"""Behaviour of NiN, VGG, ResNet, GoogLeNet and Inception v3: real compute on the tiny variants.

Each tiny model is compiled once per mode (module-scoped fixtures) in NNX functional form; the
tests then compare outputs and BatchNorm statistics across calls. Counts use abstract evaluation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import googlenet, resnet, stats
from cnn_jax.models.__main__ import main as list_main

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


def test_inception_aux_head_needs_299px():
  model = stats.abstract_model('inception_v3_tiny', NUM_CLASSES, aux_logits=True)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, 298, 298, 3), jnp.float32)
  with pytest.raises(ValueError, match='aux head needs Mixed_6e maps of at least 17x17'):
    jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, x)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
  assert out.shape == (1, NUM_CLASSES)


# torchvision 0.29: googlenet(aux_logits=True) and inception_v3(aux_logits=False, init_weights=False)
# count 13,004,888 and 23,834,568 parameters (sum of p.numel()).
@pytest.mark.parametrize('name,kwargs,params', [
    ('googlenet', {'aux_logits': True}, 13_004_888),
    ('inception_v3', {'aux_logits': False}, 23_834_568),
])
def test_parameter_count_with_and_without_aux_heads(name, kwargs, params):
  assert stats.count_params(stats.abstract_model(name, **kwargs)) == params


# GMACs at the model's input size. torchvision models: `meta['_ops']` of their IMAGENET1K_V1 weights
# (torchvision 0.29.1, `models/{vgg,resnet,googlenet,inception}.py`). The others by hand:
# - ResNet-50 v1 (He et al. 2015, Table 1: "3.8 x 10^9" multiply-adds) strides the first bottleneck
#   of conv3_x, conv4_x and conv5_x in its first 1x1 conv, torchvision's v1.5 in the 3x3; so that 1x1
#   (c_in -> width) runs at the output size, c_in x width x (H_in^2 - H_out^2) MACs fewer each.
RESNET50_V1 = 4.089 - (256 * 128 * (56**2 - 28**2) + 512 * 256 * (28**2 - 14**2)
                       + 1024 * 512 * (14**2 - 7**2)) / 1e9
# - GoogLeNet as in Szegedy et al. 2014 (Table 1) has true 5x5 convs where torchvision's port has 3x3
#   ones: (25 - 9) x #5x5reduce x #5x5 x H x W more MACs in each inception module, per Table 1's
#   columns (3a, 3b at 28 px; 4a-4e at 14 px; 5a, 5b at 7 px).
GOOGLENET_PAPER = 1.498 + 16 * (28**2 * (16 * 32 + 32 * 96)
                                + 14**2 * (16 * 48 + 24 * 64 + 24 * 64 + 32 * 64 + 32 * 128)
                                + 7**2 * (32 * 128 + 48 * 128)) / 1e9
# - BN-NIN (soumith/imagenet-multiGPU.torch `models/ninbn.lua`) at 224 px: four mlpconv blocks, a
#   k x k conv then two 1x1 convs of its width, at 56, 28, 14 and 7 px; then Linear(1024 -> 1000).
BN_NIN = ((11 * 11 * 3 * 96 + 2 * 96**2) * 56**2 + (5 * 5 * 96 * 256 + 2 * 256**2) * 28**2
          + (3 * 3 * 256 * 384 + 2 * 384**2) * 14**2 + (3 * 3 * 384 * 1024 + 2 * 1024**2) * 7**2
          + 1024 * 1000) / 1e9


@pytest.mark.parametrize('name,gmacs', [
    ('vgg11', 7.609), ('vgg13', 11.308), ('vgg16', 15.470), ('vgg19', 19.632),
    ('vgg16_bn', 15.470), ('resnet18', 1.814), ('resnet34', 3.664), ('resnet50', 4.089),
    pytest.param('resnet101', 7.801, marks=pytest.mark.slow),
    pytest.param('resnet152', 11.514, marks=pytest.mark.slow),
    ('resnet50_v1', RESNET50_V1), ('googlenet', 1.498), ('googlenet_paper', GOOGLENET_PAPER),
    ('inception_v3', 5.713), ('bn_nin', BN_NIN),
])
def test_macs_match_reference(name, gmacs):
  info = models.get_info(name)
  macs = stats.count_macs(stats.abstract_model(name), info.input_size) / 1e9
  assert macs == pytest.approx(gmacs, rel=0.01)


def test_transform_input_matches_torchvision_formula():
  x = jax.random.normal(jax.random.key(2), (1, 2, 2, 3))
  got = googlenet.transform_input(x)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  for ch in range(3):
    want = x[..., ch] * (std[ch] / 0.5) + (mean[ch] - 0.5) / 0.5
    np.testing.assert_allclose(got[..., ch], want, rtol=1e-6)


def test_resnet_stride_placement_and_zero_init_residual():
  v15 = stats.abstract_model('resnet50')
  v1 = stats.abstract_model('resnet50_v1')
  assert (v15.layer2[0].conv1.strides, v15.layer2[0].conv2.strides) == (1, 2)
  assert (v1.layer2[0].conv1.strides, v1.layer2[0].conv2.strides) == (2, 1)
  basic = resnet.BasicBlock(4, 4, zero_init_residual=True, rngs=nnx.Rngs(0))
  bottleneck = resnet.Bottleneck(16, 4, zero_init_residual=True, rngs=nnx.Rngs(0))
  for last_bn in (basic.bn2, bottleneck.bn3):
    np.testing.assert_array_equal(last_bn.scale[...], 0.0)
  for bn in (basic.bn1, bottleneck.bn1, bottleneck.bn2):
    np.testing.assert_array_equal(bn.scale[...], 1.0)


def test_cli_lists_the_models(capsys):
  names = models.list_models()
  for name in ('nin', 'bn_nin', 'vgg11', 'vgg19_bn', 'resnet18', 'resnet152', 'googlenet',
               'googlenet_paper', 'inception_v3'):
    assert name in names
  list_main(['nin', 'resnet_tiny'])
  out = capsys.readouterr().out
  assert 'nin ' in out and '7,595,176' in out and 'resnet_tiny' in out  # NiN: counted in test_models
