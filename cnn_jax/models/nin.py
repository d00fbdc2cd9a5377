"""Network in Network (Lin, Chen, Yan 2014, arXiv 1312.4400): the Caffe ImageNet NIN and BN-NIN.

An mlpconv block (paper §3.1, Fig. 2) is a k x k conv followed by two 1x1 convs ("cascaded cross
channel parametric pooling"), each with a ReLU; global average pooling replaces the FC layers (§3.2).
The paper reports no ImageNet network, so we build the authors' Caffe ImageNet model (`nin_imagenet`
train_val.prototxt, BVLC model zoo):

- `nin`: four mlpconv blocks (11x11/4, 96), (5x5 p2, 256), (3x3 p1, 384), (3x3 p1, 1024 -> 1024 ->
  num_classes); Caffe (ceil-mode) max-pool 3/2 after the first three; dropout 0.5 before block 4; a
  ReLU after the last 1x1 conv, then the average pool gives the logits. Init: Gaussian, std 0.01
  (conv1, conv3, last 1x1) or 0.05 (all others), biases 0.
- `bn_nin`: soumith/imagenet-multiGPU.torch `ninbn.lua` (the BN-NIN of Canziani et al. 2016):
  blocks (11x11/4 p5, 96), (5x5 p2, 256), (3x3 p1, 384), (3x3 p1, 1024), every conv followed by
  BatchNorm (eps 1e-3) and ReLU; max-pool 3/2 p1 (floor) between blocks; average pool; Linear(1024 ->
  num_classes). Torch7's default init (uniform +-1/sqrt(fan_in)).

Both reference models end with a fixed-size average pool (6x6 and 7x7), which equals the global
average pool we use at 224 px; the global pool also accepts other resolutions.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

_CAFFE_STD = ((0.01, 0.05, 0.05), (0.05, 0.05, 0.05), (0.01, 0.05, 0.05), (0.05, 0.05, 0.01))


class MLPConv(nnx.Module):
  """k x k conv -> 1x1 conv -> 1x1 conv, each followed by (BatchNorm and) ReLU."""

  def __init__(self, in_ch: int, widths: Sequence[int], kernel: int, stride: int, padding: int, *,
               batch_norm: bool, stds: Sequence[float] | None, dtype, rngs: nnx.Rngs):
    convs = []
    for i, (cin, cout) in enumerate(zip((in_ch, *widths[:-1]), widths)):
      k = kernel if i == 0 else 1
      if stds is None:
        inits = dict(kernel_init=layers.torch_default_kernel_init,
                     bias_init=layers.torch_default_bias_init(cin * k * k))
      else:
        inits = dict(kernel_init=nnx.initializers.normal(stds[i]),
                     bias_init=nnx.initializers.zeros)
      convs.append(layers.Conv(cin, cout, (k, k), stride if i == 0 else 1,
                               padding=layers.pad(padding if i == 0 else 0), dtype=dtype,
                               rngs=rngs, **inits))
    self.convs = nnx.List(convs)
    self.bns = nnx.List(
        [layers.batch_norm(c, eps=1e-3, dtype=dtype, rngs=rngs) for c in widths]
        if batch_norm else [])

  def __call__(self, x, *, train: bool = False):
    for i, conv in enumerate(self.convs):
      x = conv(x)
      x = (self.bns[i](x, use_running_average=not train, activation='relu') if self.bns
           else nnx.relu(x))
    return x


class NiN(nnx.Module):
  """The Caffe ImageNet NIN (`batch_norm=False`) or BN-NIN (`batch_norm=True`); see module doc."""

  def __init__(self, num_classes: int = 1000, *, widths: Sequence[int] = (96, 256, 384, 1024),
               batch_norm: bool = False, dropout: float = 0.5, dtype=None, rngs: nnx.Rngs):
    self.name = 'bn_nin' if batch_norm else 'nin'
    self.batch_norm = batch_norm
    # BN-NIN pads conv1 by 5 and its pools by 1 (floor); Caffe NIN pads neither (ceil-mode pools).
    self.min_input_size = 1 if batch_norm else 39
    kernels = ((11, 4, 5 if batch_norm else 0), (5, 1, 2), (3, 1, 1), (3, 1, 1))
    blocks = []
    for i, ((k, s, p), c) in enumerate(zip(kernels, widths)):
      last = i == len(widths) - 1
      out = (c, c, num_classes) if last and not batch_norm else (c, c, c)
      blocks.append(MLPConv(
          widths[i - 1] if i else 3, out, k, s, p, batch_norm=batch_norm,
          stds=None if batch_norm else _CAFFE_STD[i], dtype=dtype, rngs=rngs))
    self.blocks = nnx.List(blocks)
    if batch_norm:
      self.fc = layers.linear(widths[-1], num_classes, kernel_init=layers.torch_default_kernel_init,
                           bias_init=layers.torch_default_bias_init(widths[-1]), dtype=dtype,
                           rngs=rngs)
    else:
      self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    for i, block in enumerate(self.blocks):
      if i:
        x = (layers.max_pool(x, 3, 2, padding=1) if self.batch_norm
             else layers.max_pool(x, 3, 2, ceil_mode=True))
      if i == len(self.blocks) - 1 and not self.batch_norm:
        x = self.dropout(x, deterministic=not train)
      x = block(x, train=train)
    x = layers.global_avg_pool(x)
    if self.batch_norm:
      x = self.fc(x)
    return x.astype(jnp.float32)


_PAPER = 'Lin, Chen, Yan 2014, Network In Network (arXiv 1312.4400)'
register('nin', NiN, family='nin', paper=_PAPER + ', Caffe ImageNet model (nin_imagenet)',
         params=7_595_176, min_input_size=39, top1=56.7, top5=79.5,
         source='BVLC Caffe wiki "Models accuracy on ImageNet 2012 val" (1 centre crop)',
         input_convention='raw_centred', eval_geometry='exact')
register('bn_nin', NiN, kwargs={'batch_norm': True}, family='nin',
         paper=_PAPER + ' + BatchNorm (imagenet-multiGPU.torch ninbn.lua)', params=8_655_336,
         min_input_size=1, top1=62.6, source='imagenet-multiGPU.torch ninbn.lua header (35 epochs)',
         input_convention='torch7_meanstd', eval_geometry='exact')
register('nin_tiny', NiN, kwargs={'widths': (16, 24, 32, 48)}, family='nin',
         paper=_PAPER + ' (narrow, for tests)', params=None, input_size=64, min_input_size=39,
         eval_resize=73, tiny=True, input_convention='raw_centred', eval_geometry='exact')
register('bn_nin_tiny', NiN, kwargs={'widths': (16, 24, 32, 48), 'batch_norm': True},
         family='nin', paper=_PAPER + ' + BatchNorm (narrow, for tests)', params=None,
         input_size=32, min_input_size=1, eval_resize=37, tiny=True,
         input_convention='torch7_meanstd', eval_geometry='exact')
