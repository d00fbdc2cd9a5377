"""The model zoo's registry and structure: exact parameter counts, GMACs, output shapes, input-size
errors, the layout the papers pin (strides, grid sizes) and the model-listing CLI.

All by abstract evaluation (`stats.abstract_model`, `jax.eval_shape`): nothing is compiled.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.models import resnet, stats
from cnn_jax.models.__main__ import main as list_main

PUBLISHED = [n for n in models.list_models() if models.get_info(n).params is not None]
# The deepest networks take seconds each to trace abstractly on a 2-core CPU: their shape, error and
# count tests are `slow` (out of `make test-fast`); every other model, tiny variants included, stays.
DEEP = ('densenet121', 'inception_v3', 'inception_v4', 'resnet101', 'resnet152')


def _marked(names):
  return [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in names]

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


def _output_shape(name, size, num_classes=7, batch=2, train=False, **kwargs):
  model = stats.abstract_model(name, num_classes, **kwargs)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=train), state, x)
  return out.shape


# ----------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('name', _marked(PUBLISHED))
def test_exact_parameter_count(name):
  assert stats.count_params(stats.abstract_model(name)) == PARAMS[name]
  assert models.get_info(name).params == PARAMS[name]  # what the registry and README print


# torchvision 0.29: googlenet(aux_logits=True) and inception_v3(aux_logits=False, init_weights=False)
# count 13,004,888 and 23,834,568 parameters (sum of p.numel()).
@pytest.mark.parametrize('name,kwargs,params', [
    ('googlenet', {'aux_logits': True}, 13_004_888),
    ('inception_v3', {'aux_logits': False}, 23_834_568),
])
def test_parameter_count_with_and_without_aux_heads(name, kwargs, params):
  assert stats.count_params(stats.abstract_model(name, **kwargs)) == params


# ----------------------------------------------------------------------------- GMACs
# At the model's input size, multiplications of convs and matmuls only. torchvision models:
# `meta['_ops']` of their IMAGENET1K_V1 weights (torchvision 0.29.1, `models/{alexnet,vgg,resnet,
# googlenet,inception,squeezenet,densenet,mobilenetv2}.py`). The others by hand:
# - AlexNet 2012 from Fig. 2 at 227 px: conv1 55^2*363*96, conv2 27^2*1200*256, conv3 13^2*2304*384,
#   conv4 13^2*1728*384, conv5 13^2*1728*256, fc 9216*4096 + 4096^2 + 4096*1000 = 0.7244 G.
ALEXNET2012 = (55**2 * 363 * 96 + 27**2 * 1200 * 256 + 13**2 * 2304 * 384 + 13**2 * 1728 * 384
               + 13**2 * 1728 * 256 + 9216 * 4096 + 4096**2 + 4096 * 1000) / 1e9
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
    ('alexnet', 0.714), ('alexnet2012', ALEXNET2012),
    ('vgg11', 7.609), ('vgg13', 11.308), ('vgg16', 15.470), ('vgg19', 19.632),
    ('vgg16_bn', 15.470), ('resnet18', 1.814), ('resnet34', 3.664), ('resnet50', 4.089),
    pytest.param('resnet101', 7.801, marks=pytest.mark.slow),
    pytest.param('resnet152', 11.514, marks=pytest.mark.slow),
    ('resnet50_v1', RESNET50_V1), ('googlenet', 1.498), ('googlenet_paper', GOOGLENET_PAPER),
    ('inception_v3', 5.713), ('bn_nin', BN_NIN),
    ('squeezenet1_0', 0.819), ('squeezenet1_1', 0.349), ('densenet121', 2.834),
    ('mobilenet_v2', 0.301),
])
def test_macs_match_reference(name, gmacs):
  info = models.get_info(name)
  macs = stats.count_macs(stats.abstract_model(name), info.input_size) / 1e9
  assert macs == pytest.approx(gmacs, rel=0.01)


# ----------------------------------------------------------------------------- shapes and errors

@pytest.mark.parametrize('name', _marked(models.list_models()))
def test_output_shape_at_default_and_minimum_size(name):
  info = models.get_info(name)
  assert _output_shape(name, info.input_size) == (2, 7)
  assert _output_shape(name, info.min_input_size) == (2, 7)


@pytest.mark.parametrize('name', _marked(models.list_models()))
def test_too_small_input_names_model_and_minimum(name):
  info = models.get_info(name)
  with pytest.raises(ValueError, match=rf'{name}.*at least {info.min_input_size}x{info.min_input_size}'):
    _output_shape(name, info.min_input_size - 1)


def test_unknown_model_lists_known_ones():
  with pytest.raises(KeyError, match='known models: .*alexnet2012'):
    models.create('alexnet2013')


def test_inception_aux_head_needs_299px():
  with pytest.raises(ValueError, match='aux head needs Mixed_6e maps of at least 17x17'):
    _output_shape('inception_v3_tiny', 298, batch=1, train=True, aux_logits=True)
  assert _output_shape('inception_v3_tiny', 298, batch=1, aux_logits=True) == (1, 7)


@pytest.mark.parametrize('size', [9, 224, 225])
def test_enet_accepts_odd_sizes(size):
  """The initial block's max-pool uses ceil mode, so the concat also works for odd sizes."""
  model = stats.abstract_model('enet', 5)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).initial(x), state, x)
  assert out.shape == (1, -(-size // 2), -(-size // 2), 16)


# ----------------------------------------------------------------------------- layout

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
  assert 'nin ' in out and f'{PARAMS["nin"]:,}' in out and 'resnet_tiny' in out
