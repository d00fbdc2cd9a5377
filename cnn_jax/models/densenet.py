"""DenseNet-121, torchvision-compatible (layout, init and module names).

Huang et al. 2017, "Densely Connected Convolutional Networks" (arXiv 1608.06993): each layer
receives the concatenation of all earlier feature maps of its block (§3, "Dense connectivity");
the DenseNet-BC layer BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) ("Bottleneck layers"); transitions
BN-ReLU-Conv1x1 halving the channels ("Compression", theta = 0.5) then 2x2 average pooling; the
ImageNet layout of Table 1 (7x7/2 conv, 3x3/2 max-pool, blocks of 6-12-24-16 layers, growth k = 32,
global average pool, 1000-way FC). As torchvision `densenet.py`: 64 stem features, BN eps 1e-5,
a final BN (`norm5`) and ReLU before pooling; init: convs kaiming_normal (fan-in), BN 1/0, FC
bias 0 (weight PyTorch's default).

Module names mirror torchvision's state_dict: `features.conv0`, `features.norm0`,
`features.denseblock<b>.denselayer<l>.{norm1,conv1,norm2,conv2}`,
`features.transition<b>.{norm,conv}`, `features.norm5`, `classifier`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

_kaiming_normal = nnx.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _conv(cin, cout, kernel, stride=1, padding=0, *, dtype, rngs):
  return layers.Conv(cin, cout, (kernel, kernel), stride, padding=layers.pad(padding),
                     use_bias=False, kernel_init=_kaiming_normal, dtype=dtype, rngs=rngs)


class DenseLayer(nnx.Module):
  """BN-ReLU-Conv1x1(bn_size * growth) -> BN-ReLU-Conv3x3(growth) on the concatenated inputs."""

  def __init__(self, cin, growth, bn_size, *, dtype=None, rngs: nnx.Rngs):
    self.norm1 = layers.batch_norm(cin, dtype=dtype, rngs=rngs)
    self.conv1 = _conv(cin, bn_size * growth, 1, dtype=dtype, rngs=rngs)
    self.norm2 = layers.batch_norm(bn_size * growth, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(bn_size * growth, growth, 3, padding=1, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    x = self.conv1(self.norm1(x, use_running_average=not train, activation='relu'))
    return self.conv2(self.norm2(x, use_running_average=not train, activation='relu'))


class Transition(nnx.Module):
  """BN-ReLU-Conv1x1 (compression) -> AvgPool 2x2/2."""

  def __init__(self, cin, cout, *, dtype=None, rngs: nnx.Rngs):
    self.norm = layers.batch_norm(cin, dtype=dtype, rngs=rngs)
    self.conv = _conv(cin, cout, 1, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    x = self.norm(x, use_running_average=not train, activation='relu')
    return layers.avg_pool(self.conv(x), 2, 2)


class DenseNet(nnx.Module):
  """DenseNet-BC: `block_config` layers per dense block, growth rate `growth_rate`."""

  min_input_size = 29

  def __init__(self, num_classes: int = 1000, *, growth_rate: int = 32,
               block_config: Sequence[int] = (6, 12, 24, 16), num_init_features: int = 64,
               bn_size: int = 4, dtype=None, rngs: nnx.Rngs):
    self.name = 'densenet'
    self.block_config = tuple(block_config)
    features = {'conv0': _conv(3, num_init_features, 7, 2, 3, dtype=dtype, rngs=rngs),
                'norm0': layers.batch_norm(num_init_features, dtype=dtype, rngs=rngs)}
    channels = num_init_features
    for b, num_layers in enumerate(self.block_config, start=1):
      block = {}
      for i in range(1, num_layers + 1):
        block[f'denselayer{i}'] = DenseLayer(channels, growth_rate, bn_size, dtype=dtype, rngs=rngs)
        channels += growth_rate
      features[f'denseblock{b}'] = nnx.Dict(block)
      if b < len(self.block_config):
        features[f'transition{b}'] = Transition(channels, channels // 2, dtype=dtype, rngs=rngs)
        channels //= 2
    features['norm5'] = layers.batch_norm(channels, dtype=dtype, rngs=rngs)
    self.features = nnx.Dict(features)
    self.classifier = layers.linear(channels, num_classes, kernel_init=layers.torch_default_kernel_init,
                                 bias_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    f = self.features
    x = f['norm0'](f['conv0'](x), use_running_average=not train, activation='relu')
    x = layers.max_pool(x, 3, 2, padding=1)
    for b, num_layers in enumerate(self.block_config, start=1):
      block = f[f'denseblock{b}']  # indexed by name: nnx orders attributes by sorted key
      for i in range(1, num_layers + 1):
        x = jnp.concatenate([x, block[f'denselayer{i}'](x, train=train)], axis=-1)
      if b < len(self.block_config):
        x = f[f'transition{b}'](x, train=train)
    x = f['norm5'](x, use_running_average=not train, activation='relu')
    return self.classifier(layers.global_avg_pool(x)).astype(jnp.float32)


_PAPER = 'Huang et al. 2017, Densely Connected Convolutional Networks'
register('densenet121', DenseNet, family='densenet', paper=_PAPER, params=7_978_856,
         min_input_size=29, top1=74.434, top5=91.972, source='torchvision IMAGENET1K_V1',
         input_convention='torchvision', eval_geometry='torchvision')
register('densenet_tiny', DenseNet,
         kwargs={'growth_rate': 8, 'block_config': (2, 2, 2, 2), 'num_init_features': 16},
         family='densenet', paper=_PAPER + ' (narrow and shallow, for tests)', params=None,
         input_size=32, min_input_size=29, eval_resize=36, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
