"""ResNet (He, Zhang, Ren, Sun 2016, arXiv 1512.03385) as torchvision builds it.

Paper §3.3-3.4 and Table 1: a 7x7/2 conv stem and 3x3/2 max-pool, four stages of basic
(3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) blocks, BatchNorm after every conv and before the ReLU,
global average pool, one FC layer, no dropout. Shortcuts are identities, or a 1x1 projection + BN
where the shape changes (option B, §3.3).

By default the bottleneck strides on its 3x3 conv ("ResNet v1.5", torchvision and NVIDIA's rn50
v1.5); `stride_on_first_1x1=True` strides on the first 1x1 as the paper does (Fig. 5; registered
as `resnet50_v1` etc.). BN eps 1e-5, momentum 0.1 (PyTorch). Init as torchvision: convs
kaiming_normal(fan_out), BN scale 1 and bias 0, the FC layer PyTorch's default; with
`zero_init_residual=True` the last BN of each block starts at scale 0 (Goyal et al. 2017, §5.1).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register


def _conv(cin, cout, kernel, stride=1, *, dtype, rngs):
  return layers.Conv(cin, cout, (kernel, kernel), stride, padding=layers.pad(kernel // 2),
                     use_bias=False, kernel_init=layers.kaiming_normal_fan_out, dtype=dtype,
                     rngs=rngs)


def _bn(c, *, zero=False, dtype, rngs):
  scale_init = nnx.initializers.zeros if zero else nnx.initializers.ones
  return layers.batch_norm(c, scale_init=scale_init, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convs (paper Fig. 5 left); the first one strides."""

  expansion = 1

  def __init__(self, cin: int, width: int, stride: int = 1, *, zero_init_residual: bool = False,
               stride_on_first_1x1: bool = False, dtype=None, rngs: nnx.Rngs):
    del stride_on_first_1x1  # a basic block has no 1x1 conv
    self.conv1 = _conv(cin, width, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(width, width, 3, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(width, zero=zero_init_residual, dtype=dtype, rngs=rngs)
    self.downsample = _shortcut(cin, width, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    ura = not train
    y = self.bn1(self.conv1(x), use_running_average=ura, activation='relu')
    shortcut = x if self.downsample is None else self.downsample(x, train=train)
    return self.bn2(self.conv2(y), use_running_average=ura, activation='relu', residual=shortcut)


class Bottleneck(nnx.Module):
  """1x1 (reduce) -> 3x3 -> 1x1 (x4 expand) (paper Fig. 5 right)."""

  expansion = 4

  def __init__(self, cin: int, width: int, stride: int = 1, *, zero_init_residual: bool = False,
               stride_on_first_1x1: bool = False, dtype=None, rngs: nnx.Rngs):
    s1, s2 = (stride, 1) if stride_on_first_1x1 else (1, stride)
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 1, s1, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(width, width, 3, s2, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(width, cout, 1, dtype=dtype, rngs=rngs)
    self.bn3 = _bn(cout, zero=zero_init_residual, dtype=dtype, rngs=rngs)
    self.downsample = _shortcut(cin, cout, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    ura = not train
    y = self.bn1(self.conv1(x), use_running_average=ura, activation='relu')
    y = self.bn2(self.conv2(y), use_running_average=ura, activation='relu')
    shortcut = x if self.downsample is None else self.downsample(x, train=train)
    return self.bn3(self.conv3(y), use_running_average=ura, activation='relu', residual=shortcut)


def _shortcut(cin, cout, stride, *, dtype, rngs):
  """Option B: a 1x1 projection + BN only where the stride or the width changes."""
  if stride == 1 and cin == cout:
    return None
  return layers.ConvBN(cin, cout, 1, stride, relu=False, dtype=dtype, rngs=rngs)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class ResNet(nnx.Module):
  """`block` in BLOCKS, `depths` blocks per stage, stage widths `width * (1, 2, 4, 8)`."""

  name = 'resnet'
  min_input_size = 1

  def __init__(self, num_classes: int = 1000, *, block: str = 'bottleneck',
               depths: Sequence[int] = (3, 4, 6, 3), width: int = 64,
               zero_init_residual: bool = False, stride_on_first_1x1: bool = False,
               dtype=None, rngs: nnx.Rngs):
    block_cls = BLOCKS[block]
    self.conv1 = layers.Conv(3, width, (7, 7), 2, padding=layers.pad(3), use_bias=False,
                             kernel_init=layers.kaiming_normal_fan_out, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    cin = width
    for i, depth in enumerate(depths):
      blocks = []
      for j in range(depth):
        blocks.append(block_cls(
            cin, width * 2**i, 2 if i > 0 and j == 0 else 1, zero_init_residual=zero_init_residual,
            stride_on_first_1x1=stride_on_first_1x1, dtype=dtype, rngs=rngs))
        cin = width * 2**i * block_cls.expansion
      setattr(self, f'layer{i + 1}', nnx.List(blocks))
    self.num_stages = len(depths)
    self.fc = layers.linear(cin, num_classes, kernel_init=layers.torch_default_kernel_init,
                         bias_init=layers.torch_default_bias_init(cin), dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = self.bn1(self.conv1(x), use_running_average=not train, activation='relu')
    x = layers.max_pool(x, 3, 2, padding=1)
    for i in range(self.num_stages):
      for block in getattr(self, f'layer{i + 1}'):
        x = block(x, train=train)
    return self.fc(layers.global_avg_pool(x)).astype(jnp.float32)


_PAPER = 'He, Zhang, Ren, Sun 2016, Deep Residual Learning (arXiv 1512.03385)'
# depth: (block, depths, params, torchvision top-1, top-5 (IMAGENET1K_V1)).
_PUBLISHED = {
    18: ('basic', (2, 2, 2, 2), 11_689_512, 69.758, 89.078),
    34: ('basic', (3, 4, 6, 3), 21_797_672, 73.314, 91.420),
    50: ('bottleneck', (3, 4, 6, 3), 25_557_032, 76.130, 92.862),
    101: ('bottleneck', (3, 4, 23, 3), 44_549_160, 77.374, 93.546),
    152: ('bottleneck', (3, 8, 36, 3), 60_192_808, 78.312, 94.046),
}
# The authors' Caffe models (v1), 1 centre crop of the short side 256 (KaimingHe README): top-1/5 err.
_PAPER_ERR = {50: (24.7, 7.8)}
for _depth, (_block, _depths, _params, _top1, _top5) in _PUBLISHED.items():
  _kwargs = {'block': _block, 'depths': _depths}
  register(f'resnet{_depth}', ResNet, kwargs=_kwargs, family='resnet',
           paper=_PAPER + (' (v1.5: stride on the 3x3)' if _block == 'bottleneck' else ''),
           params=_params, min_input_size=1, top1=_top1, top5=_top5,
           source='torchvision IMAGENET1K_V1', input_convention='torchvision',
           eval_geometry='torchvision')
  if _depth in _PAPER_ERR:
    _e1, _e5 = _PAPER_ERR[_depth]
    register(f'resnet{_depth}_v1', ResNet, kwargs={**_kwargs, 'stride_on_first_1x1': True},
             family='resnet', paper=_PAPER + ' (v1: stride on the first 1x1)', params=_params,
             min_input_size=1, top1=round(100 - _e1, 2), top5=round(100 - _e5, 2),
             source='KaimingHe/deep-residual-networks README (Caffe, 1 centre crop)',
             input_convention='raw_centred', eval_geometry='exact')
register('resnet_tiny', ResNet, kwargs={'block': 'basic', 'depths': (1, 1, 1, 1), 'width': 8},
         family='resnet', paper=_PAPER + ' (narrow, 1 basic block per stage, for tests)',
         params=None, input_size=32, min_input_size=1, eval_resize=37, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
register('resnet_tiny_bottleneck', ResNet,
         kwargs={'block': 'bottleneck', 'depths': (1, 1, 1, 1), 'width': 4}, family='resnet',
         paper=_PAPER + ' (narrow, 1 bottleneck block per stage, for tests)', params=None,
         input_size=32, min_input_size=1, eval_resize=37, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
