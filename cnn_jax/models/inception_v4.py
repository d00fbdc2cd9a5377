"""Inception-v4 (299 px), as TF-slim `inception_v4.py` and timm `inception_v4` build it.

Szegedy, Ioffe, Vanhoucke, Alemi 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning" (arXiv 1602.07261), §3.1 and Figs. 3-9: the stem (Fig. 3), 4 x Inception-A
(Fig. 4), Reduction-A (Fig. 7 with k=192, l=224, m=256, n=384), 7 x Inception-B (Fig. 5),
Reduction-B (Fig. 8), 3 x Inception-C (Fig. 6), average pooling, dropout (keep 0.8, Fig. 9) and a
1536 -> 1000 softmax layer. "V" in the figures is valid (no) padding; every other conv keeps the size.

What the figures leave open follows TF-slim (the authors' released code) and timm's port of its
weights: each conv has no bias and is followed by BatchNorm (eps 1e-3) and ReLU; the branch pools of
Inception-A/B/C are 3x3/1 average pools that do not count the padding (TF 'SAME'); the order of the
factorised 1x7/7x1 convs is TF-slim's (the stem's 1x7 comes before its 7x1, Fig. 3 draws the reverse;
the count is the same). The BN has a scale (gamma) as in timm: 42,679,816 parameters, timm's count.
TF-slim's BN has no gamma, which leaves 42,648,232 (31,584 fewer). Convs use TF-slim's init
(`variance_scaling_initializer`: He, fan-in, truncated normal), the FC Glorot-uniform.

Module names follow timm: `features[0..21]` (0-2 stem convs, 3 `Mixed3a`, 4 `Mixed4a`, 5 `Mixed5a`,
6-9 Inception-A, 10 Reduction-A, 11-17 Inception-B, 18 Reduction-B, 19-21 Inception-C), branches
`branch0..branch3` (a list where timm has a Sequential), and `last_linear`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

_he_normal = nnx.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


class _Ops:
  """Builds the BN-ReLU conv units of one network: channel widths scaled by `width` (1.0 = paper)."""

  def __init__(self, width: float, dtype, rngs: nnx.Rngs):
    self.width, self.dtype, self.rngs = width, dtype, rngs

  def ch(self, n: int) -> int:
    return max(1, int(n * self.width))

  def conv(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> layers.ConvBN:
    """Conv (no bias) -> BN(eps 1e-3) -> ReLU; `cin` is already scaled, `cout` is the paper's width."""
    return layers.ConvBN(cin, self.ch(cout), kernel, stride, padding, eps=1e-3,
                         kernel_init=_he_normal, dtype=self.dtype, rngs=self.rngs)

  def chain(self, cin: int, specs) -> nnx.List:
    """Convs in sequence; specs are (cout, kernel, stride, padding)."""
    units = []
    for cout, kernel, stride, padding in specs:
      units.append(self.conv(cin, cout, kernel, stride, padding))
      cin = self.ch(cout)
    return nnx.List(units)


def _run(units, x, train):
  for unit in units:
    x = unit(x, train=train)
  return x


def _branch_pool(x):
  """3x3/1 average pool, padding 1, padded cells not counted (TF-slim 'SAME' avg_pool)."""
  return nnx.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


# Factorised 7x7 and 3x3 convs as (kernel, stride, 'same' padding), in (h, w) order.
_1x7, _7x1 = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
_1x3, _3x1 = ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))


class Mixed3a(nnx.Module):
  """Stem, Fig. 3: [3x3/2 max-pool V, 3x3/2 conv 96 V] -> concat (160)."""

  def __init__(self, cin, ops: _Ops):
    self.conv = ops.conv(cin, 96, 3, 2)
    self.out_ch = cin + ops.ch(96)

  def __call__(self, x, *, train=False):
    return jnp.concatenate([layers.max_pool(x, 3, 2), self.conv(x, train=train)], axis=-1)


class Mixed4a(nnx.Module):
  """Stem, Fig. 3: [1x1 64 -> 3x3 96 V, 1x1 64 -> 1x7 64 -> 7x1 64 -> 3x3 96 V] -> concat (192)."""

  def __init__(self, cin, ops: _Ops):
    self.branch0 = ops.chain(cin, [(64, 1, 1, 0), (96, 3, 1, 0)])
    self.branch1 = ops.chain(cin, [(64, 1, 1, 0), (64, *_1x7),
                                   (64, *_7x1), (96, 3, 1, 0)])
    self.out_ch = 2 * ops.ch(96)

  def __call__(self, x, *, train=False):
    return jnp.concatenate([_run(self.branch0, x, train), _run(self.branch1, x, train)], axis=-1)


class Mixed5a(nnx.Module):
  """Stem, Fig. 3: [3x3/2 conv 192 V, 3x3/2 max-pool V] -> concat (384)."""

  def __init__(self, cin, ops: _Ops):
    self.conv = ops.conv(cin, 192, 3, 2)
    self.out_ch = ops.ch(192) + cin

  def __call__(self, x, *, train=False):
    return jnp.concatenate([self.conv(x, train=train), layers.max_pool(x, 3, 2)], axis=-1)


class InceptionA(nnx.Module):
  """Fig. 4 (35x35): [1x1 96], [1x1 64 -> 3x3 96], [1x1 64 -> 3x3 96 -> 3x3 96], [avg -> 1x1 96]."""

  def __init__(self, cin, ops: _Ops):
    self.branch0 = ops.chain(cin, [(96, 1, 1, 0)])
    self.branch1 = ops.chain(cin, [(64, 1, 1, 0), (96, 3, 1, 1)])
    self.branch2 = ops.chain(cin, [(64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 1, 1)])
    self.branch3 = ops.chain(cin, [(96, 1, 1, 0)])
    self.out_ch = 4 * ops.ch(96)

  def __call__(self, x, *, train=False):
    return jnp.concatenate([_run(self.branch0, x, train), _run(self.branch1, x, train),
                            _run(self.branch2, x, train),
                            _run(self.branch3, _branch_pool(x), train)], axis=-1)


class ReductionA(nnx.Module):
  """Fig. 7 (35 -> 17): [3x3/2 n V], [1x1 k -> 3x3 l -> 3x3/2 m V], [3x3/2 max-pool V]."""

  def __init__(self, cin, ops: _Ops, k=192, l=224, m=256, n=384):
    self.branch0 = ops.chain(cin, [(n, 3, 2, 0)])
    self.branch1 = ops.chain(cin, [(k, 1, 1, 0), (l, 3, 1, 1), (m, 3, 2, 0)])
    self.out_ch = ops.ch(n) + ops.ch(m) + cin

  def __call__(self, x, *, train=False):
    return jnp.concatenate([_run(self.branch0, x, train), _run(self.branch1, x, train),
                            layers.max_pool(x, 3, 2)], axis=-1)


class InceptionB(nnx.Module):
  """Fig. 5 (17x17): [1x1 384], [1x1 192 -> 1x7 224 -> 7x1 256],
  [1x1 192 -> 7x1 192 -> 1x7 224 -> 7x1 224 -> 1x7 256], [avg -> 1x1 128]."""

  def __init__(self, cin, ops: _Ops):
    self.branch0 = ops.chain(cin, [(384, 1, 1, 0)])
    self.branch1 = ops.chain(cin, [(192, 1, 1, 0), (224, *_1x7),
                                   (256, *_7x1)])
    self.branch2 = ops.chain(cin, [(192, 1, 1, 0), (192, *_7x1),
                                   (224, *_1x7), (224, *_7x1),
                                   (256, *_1x7)])
    self.branch3 = ops.chain(cin, [(128, 1, 1, 0)])
    self.out_ch = ops.ch(384) + 2 * ops.ch(256) + ops.ch(128)

  def __call__(self, x, *, train=False):
    return jnp.concatenate([_run(self.branch0, x, train), _run(self.branch1, x, train),
                            _run(self.branch2, x, train),
                            _run(self.branch3, _branch_pool(x), train)], axis=-1)


class ReductionB(nnx.Module):
  """Fig. 8 (17 -> 8): [1x1 192 -> 3x3/2 192 V], [1x1 256 -> 1x7 256 -> 7x1 320 -> 3x3/2 320 V],
  [3x3/2 max-pool V]."""

  def __init__(self, cin, ops: _Ops):
    self.branch0 = ops.chain(cin, [(192, 1, 1, 0), (192, 3, 2, 0)])
    self.branch1 = ops.chain(cin, [(256, 1, 1, 0), (256, *_1x7),
                                   (320, *_7x1), (320, 3, 2, 0)])
    self.out_ch = ops.ch(192) + ops.ch(320) + cin

  def __call__(self, x, *, train=False):
    return jnp.concatenate([_run(self.branch0, x, train), _run(self.branch1, x, train),
                            layers.max_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
  """Fig. 6 (8x8): [1x1 256], [1x1 384 -> (1x3 256, 3x1 256)],
  [1x1 384 -> 3x1 448 -> 1x3 512 -> (1x3 256, 3x1 256)], [avg -> 1x1 256]."""

  def __init__(self, cin, ops: _Ops):
    c384, c512 = ops.ch(384), ops.ch(512)
    self.branch0 = ops.conv(cin, 256, 1)
    self.branch1_0 = ops.conv(cin, 384, 1)
    self.branch1_1a = ops.conv(c384, 256, *_1x3)
    self.branch1_1b = ops.conv(c384, 256, *_3x1)
    self.branch2_0 = ops.conv(cin, 384, 1)
    self.branch2_1 = ops.conv(c384, 448, *_3x1)
    self.branch2_2 = ops.conv(ops.ch(448), 512, *_1x3)
    self.branch2_3a = ops.conv(c512, 256, *_1x3)
    self.branch2_3b = ops.conv(c512, 256, *_3x1)
    self.branch3 = ops.conv(cin, 256, 1)
    self.out_ch = 6 * ops.ch(256)

  def __call__(self, x, *, train=False):
    x1 = self.branch1_0(x, train=train)
    x2 = self.branch2_2(self.branch2_1(self.branch2_0(x, train=train), train=train), train=train)
    return jnp.concatenate([
        self.branch0(x, train=train),
        self.branch1_1a(x1, train=train), self.branch1_1b(x1, train=train),
        self.branch2_3a(x2, train=train), self.branch2_3b(x2, train=train),
        self.branch3(_branch_pool(x), train=train)], axis=-1)


class InceptionV4(nnx.Module):
  """Inception-v4 (Fig. 9); `blocks` = repeats of Inception-A/B/C, `width` scales every conv."""

  min_input_size = 75

  def __init__(self, num_classes: int = 1000, *, blocks: Sequence[int] = (4, 7, 3),
               width: float = 1.0, dropout: float = 0.2, dtype=None, rngs: nnx.Rngs):
    self.name = 'inception_v4'
    ops = _Ops(width, dtype, rngs)
    stem = ops.chain(3, [(32, 3, 2, 0), (32, 3, 1, 0), (64, 3, 1, 1)])
    features, cin = list(stem), ops.ch(64)

    def add(block):
      nonlocal cin
      features.append(block)
      cin = block.out_ch

    for block_type in (Mixed3a, Mixed4a, Mixed5a):
      add(block_type(cin, ops))
    for reduction, block_type, repeats in ((None, InceptionA, blocks[0]),
                                           (ReductionA, InceptionB, blocks[1]),
                                           (ReductionB, InceptionC, blocks[2])):
      if reduction is not None:
        add(reduction(cin, ops))
      for _ in range(repeats):
        add(block_type(cin, ops))
    self.features = nnx.List(features)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.last_linear = layers.linear(cin, num_classes, kernel_init=nnx.initializers.xavier_uniform(),
                                  dtype=dtype, rngs=rngs)  # TF-slim fully_connected default

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    for block in self.features:
      x = block(x, train=train)
    x = self.dropout(layers.global_avg_pool(x), deterministic=not train)
    return self.last_linear(x).astype(jnp.float32)


_PAPER = ('Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual '
          'Connections on Learning')
register('inception_v4', InceptionV4, family='inception_v4', paper=_PAPER, params=42_679_816,
         input_size=299, min_input_size=75, eval_resize=342, top1=80.2, top5=95.2,
         source='TF-slim released inception_v4 checkpoint (tensorflow/models research/slim)',
         input_convention='tf_inception', eval_geometry='exact')
register('inception_v4_tiny', InceptionV4, kwargs={'blocks': (1, 1, 1), 'width': 0.125},
         family='inception_v4', paper=_PAPER + ' (narrow and shallow, for tests)', params=None,
         input_size=75, min_input_size=75, eval_resize=86, tiny=True,
         input_convention='tf_inception', eval_geometry='exact')
