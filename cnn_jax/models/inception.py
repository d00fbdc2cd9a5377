"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture", arXiv 1512.00567).

The network of the paper's Table 1 and §6-7 as torchvision builds it (`inception_v3`, ported from
the TF weights): a 299 px stem of unpadded 3x3 convs, three 35x35 modules (Fig. 5, 5x5 kept as in
the TF release), a grid reduction (Fig. 10), four 17x17 modules with factorised 1x7/7x1 convs
(Fig. 6), a second reduction and two 8x8 modules with split 1x3/3x1 outputs (Fig. 7); global
average pool, dropout 0.5, one linear layer. Every conv is Conv (no bias) -> BatchNorm (eps 1e-3)
-> ReLU; the branch average pools count the padding (PyTorch's count_include_pad=True).

The auxiliary classifier (§4) sits on Mixed_6e: 5x5/3 average pool, 1x1 conv 128, 5x5 conv 768,
global average pool, linear (no BN on the FC, unlike the paper's "BN-auxiliary"). It runs only with
`train=True` and needs 17x17 Mixed_6e maps, i.e. inputs of at least 299 px; build with
`aux_logits=False` to train smaller images. `transform_input=True` maps ImageNet-normalised input
to the [-1, 1] scaling of the TF weights. Init as torchvision: truncated normal (cut at +-2), std
0.1 for every conv (torchvision's 0.01 tag on the aux 5x5 conv sits on the wrapper and has no
effect) and linear weight, 0.001 for the aux FC; PyTorch's default for linear biases.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.googlenet import transform_input
from cnn_jax.models.registry import register


def _conv_factory(width: float, dtype, rngs) -> Callable[..., layers.ConvBN]:
  """BasicConv2d with channel counts scaled by `width` (1 for the published network)."""
  def conv(cin, cout, kernel, stride=1, padding=0):
    return layers.ConvBN(cin, _scale(cout, width), kernel, stride, padding, eps=1e-3,
                         kernel_init=layers.trunc_normal(0.1), dtype=dtype, rngs=rngs)
  return conv


def _scale(c, width):
  return max(1, int(c * width))


def _seq(convs, x, train):
  for conv in convs:
    x = conv(x, train=train)
  return x


def _avg3(x):
  return layers.avg_pool(x, 3, 1, padding=1)  # count_include_pad=True, as torchvision


class InceptionA(nnx.Module):
  """35x35 module (paper Fig. 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

  def __init__(self, cin, pool_features, conv, width):
    s = lambda c: _scale(c, width)
    self.branch1x1 = conv(cin, 64, 1)
    self.branch5x5_1 = conv(cin, 48, 1)
    self.branch5x5_2 = conv(s(48), 64, 5, padding=2)
    self.branch3x3dbl_1 = conv(cin, 64, 1)
    self.branch3x3dbl_2 = conv(s(64), 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(s(96), 96, 3, padding=1)
    self.branch_pool = conv(cin, pool_features, 1)
    self.out_ch = s(64) + s(64) + s(96) + s(pool_features)

  def __call__(self, x, *, train: bool = False):
    return jnp.concatenate([
        self.branch1x1(x, train=train),
        _seq([self.branch5x5_1, self.branch5x5_2], x, train),
        _seq([self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3], x, train),
        self.branch_pool(_avg3(x), train=train)], axis=-1)


class InceptionB(nnx.Module):
  """35 -> 17 grid reduction (paper Fig. 10): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3x3/2."""

  def __init__(self, cin, conv, width):
    s = lambda c: _scale(c, width)
    self.branch3x3 = conv(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = conv(cin, 64, 1)
    self.branch3x3dbl_2 = conv(s(64), 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(s(96), 96, 3, stride=2)
    self.out_ch = s(384) + s(96) + cin

  def __call__(self, x, *, train: bool = False):
    return jnp.concatenate([
        self.branch3x3(x, train=train),
        _seq([self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3], x, train),
        layers.max_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
  """17x17 module with factorised 7x7 convs (paper Fig. 6), `c7` channels inside the 7x7 branches."""

  def __init__(self, cin, c7, conv, width):
    s = lambda c: _scale(c, width)
    self.branch1x1 = conv(cin, 192, 1)
    self.branch7x7_1 = conv(cin, c7, 1)
    self.branch7x7_2 = conv(s(c7), c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = conv(s(c7), 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = conv(cin, c7, 1)
    self.branch7x7dbl_2 = conv(s(c7), c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = conv(s(c7), c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = conv(s(c7), c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = conv(s(c7), 192, (1, 7), padding=(0, 3))
    self.branch_pool = conv(cin, 192, 1)
    self.out_ch = 4 * s(192)

  def __call__(self, x, *, train: bool = False):
    return jnp.concatenate([
        self.branch1x1(x, train=train),
        _seq([self.branch7x7_1, self.branch7x7_2, self.branch7x7_3], x, train),
        _seq([self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
              self.branch7x7dbl_5], x, train),
        self.branch_pool(_avg3(x), train=train)], axis=-1)


class InceptionD(nnx.Module):
  """17 -> 8 grid reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool 3x3/2."""

  def __init__(self, cin, conv, width):
    s = lambda c: _scale(c, width)
    self.branch3x3_1 = conv(cin, 192, 1)
    self.branch3x3_2 = conv(s(192), 320, 3, stride=2)
    self.branch7x7x3_1 = conv(cin, 192, 1)
    self.branch7x7x3_2 = conv(s(192), 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = conv(s(192), 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = conv(s(192), 192, 3, stride=2)
    self.out_ch = s(320) + s(192) + cin

  def __call__(self, x, *, train: bool = False):
    return jnp.concatenate([
        _seq([self.branch3x3_1, self.branch3x3_2], x, train),
        _seq([self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4], x,
             train),
        layers.max_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
  """8x8 module with expanded 1x3 / 3x1 outputs (paper Fig. 7)."""

  def __init__(self, cin, conv, width):
    s = lambda c: _scale(c, width)
    self.branch1x1 = conv(cin, 320, 1)
    self.branch3x3_1 = conv(cin, 384, 1)
    self.branch3x3_2a = conv(s(384), 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = conv(s(384), 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = conv(cin, 448, 1)
    self.branch3x3dbl_2 = conv(s(448), 384, 3, padding=1)
    self.branch3x3dbl_3a = conv(s(384), 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = conv(s(384), 384, (3, 1), padding=(1, 0))
    self.branch_pool = conv(cin, 192, 1)
    self.out_ch = s(320) + 4 * s(384) + s(192)

  def __call__(self, x, *, train: bool = False):
    b3 = self.branch3x3_1(x, train=train)
    bd = _seq([self.branch3x3dbl_1, self.branch3x3dbl_2], x, train)
    return jnp.concatenate([
        self.branch1x1(x, train=train),
        self.branch3x3_2a(b3, train=train), self.branch3x3_2b(b3, train=train),
        self.branch3x3dbl_3a(bd, train=train), self.branch3x3dbl_3b(bd, train=train),
        self.branch_pool(_avg3(x), train=train)], axis=-1)


class InceptionAux(nnx.Module):
  """Auxiliary classifier on Mixed_6e (paper §4): avg-pool 5x5/3, 1x1 conv, 5x5 conv, linear."""

  def __init__(self, cin, num_classes, conv, width, dtype, rngs):
    self.conv0 = conv(cin, 128, 1)
    self.conv1 = conv(_scale(128, width), 768, 5)
    features = _scale(768, width)
    self.fc = layers.linear(features, num_classes, kernel_init=layers.trunc_normal(0.001),
                         bias_init=layers.torch_default_bias_init(features), dtype=dtype,
                         rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    if min(x.shape[1:3]) < 17:
      raise ValueError(
          f'the Inception v3 aux head needs Mixed_6e maps of at least 17x17 (inputs of at least '
          f'299 px), got {x.shape[1]}x{x.shape[2]}; use larger images or aux_logits=False')
    x = self.conv1(self.conv0(layers.avg_pool(x, 5, 3), train=train), train=train)
    return self.fc(layers.global_avg_pool(x))


class InceptionV3(nnx.Module):
  """torchvision's `Inception3`. With `aux_logits` and `train=True` returns `(logits, (aux,))`."""

  name = 'inception_v3'
  min_input_size = 75

  def __init__(self, num_classes: int = 1000, *, aux_logits: bool = True,
               transform_input: bool = False, dropout: float = 0.5, width: float = 1.0,
               dtype=None, rngs: nnx.Rngs):
    conv = _conv_factory(width, dtype, rngs)
    s = lambda c: _scale(c, width)
    self.transform_input = transform_input
    self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = conv(s(32), 32, 3)
    self.Conv2d_2b_3x3 = conv(s(32), 64, 3, padding=1)
    self.Conv2d_3b_1x1 = conv(s(64), 80, 1)
    self.Conv2d_4a_3x3 = conv(s(80), 192, 3)
    block = functools.partial
    mixed = [('Mixed_5b', block(InceptionA, pool_features=32)),
             ('Mixed_5c', block(InceptionA, pool_features=64)),
             ('Mixed_5d', block(InceptionA, pool_features=64)),
             ('Mixed_6a', InceptionB),
             ('Mixed_6b', block(InceptionC, c7=128)),
             ('Mixed_6c', block(InceptionC, c7=160)),
             ('Mixed_6d', block(InceptionC, c7=160)),
             ('Mixed_6e', block(InceptionC, c7=192)),
             ('Mixed_7a', InceptionD),
             ('Mixed_7b', InceptionE),
             ('Mixed_7c', InceptionE)]
    cin = s(192)
    self.mixed_names = tuple(name for name, _ in mixed)
    for name, cls in mixed:
      module = cls(cin, conv=conv, width=width)
      setattr(self, name, module)
      cin = module.out_ch
      if name == 'Mixed_6e':
        self.aux_logits = aux_logits
        self.AuxLogits = (InceptionAux(cin, num_classes, conv, width, dtype, rngs)
                          if aux_logits else None)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.fc = layers.linear(cin, num_classes, kernel_init=layers.trunc_normal(0.1),
                         bias_init=layers.torch_default_bias_init(cin), dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    if self.transform_input:
      x = transform_input(x)
    x = _seq([self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3], x, train)
    x = layers.max_pool(x, 3, 2)
    x = _seq([self.Conv2d_3b_1x1, self.Conv2d_4a_3x3], x, train)
    x = layers.max_pool(x, 3, 2)
    aux = None
    for name in self.mixed_names:
      x = getattr(self, name)(x, train=train)
      if name == 'Mixed_6e' and train and self.aux_logits:
        aux = self.AuxLogits(x, train=train).astype(jnp.float32)
    x = self.dropout(layers.global_avg_pool(x), deterministic=not train)
    logits = self.fc(x).astype(jnp.float32)
    return logits if aux is None else (logits, (aux,))


_PAPER = 'Szegedy et al. 2016, Rethinking the Inception Architecture (arXiv 1512.00567)'
register('inception_v3', InceptionV3, family='inception', paper=_PAPER + ' (torchvision port)',
         params=27_161_264, input_size=299, min_input_size=75, eval_resize=342, top1=77.294,
         top5=93.450, source='torchvision IMAGENET1K_V1 (ported from TF)',
         input_convention='torchvision', eval_geometry='torchvision')
register('inception_v3_tiny', InceptionV3, kwargs={'width': 0.125, 'aux_logits': False},
         family='inception', paper=_PAPER + ' (1/8 width, no aux head, for tests)', params=None,
         input_size=75, min_input_size=75, eval_resize=86, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
