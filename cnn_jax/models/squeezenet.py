"""SqueezeNet 1.0 and 1.1, torchvision-compatible (layout, init and module names).

- Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
  model size" (arXiv 1602.07360): the Fire module (§3.2: a 1x1 "squeeze" conv feeding 1x1 and 3x3
  "expand" convs whose outputs are concatenated), the macroarchitecture of Table 1 (§3.3: conv1,
  fire2-fire9, conv10, global average pool, dropout 0.5 after fire9).
- SqueezeNet 1.1 is the revision in the authors' repo (forresti/SqueezeNet, v1.1): a 3x3/2 conv1 with
  64 filters and the pools moved earlier, 2.4x less computation at the same accuracy.
- torchvision 0.29 `models/squeezenet.py`: max-pools 3x3/2 with `ceil_mode=True`, no padding
  in conv1; head Dropout(0.5) -> conv 1x1 (512 -> classes) -> ReLU -> adaptive average pool; init:
  final conv N(0, 0.01), the other convs kaiming_uniform (gain sqrt(2), fan-in), all biases 0.

Module names: `conv1`, `fire2`..`fire9` (each with torchvision's `squeeze`, `expand1x1`,
`expand3x3`) and `final_conv`. torchvision's `features.<i>` indices map as: 1.0: 0 conv1, 3-5
fire2-4, 7-10 fire5-8, 12 fire9; 1.1: 0 conv1, 3-4 fire2-3, 6-7 fire4-5, 9-12 fire6-9;
`classifier.1` is `final_conv`.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

_kaiming_uniform = nnx.initializers.variance_scaling(2.0, 'fan_in', 'uniform')
_zeros = nnx.initializers.zeros

# (squeeze, expand1x1, expand3x3) of fire2..fire9 (paper Table 1; the same in 1.0 and 1.1).
_FIRES = ((16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))
# version: (conv1 filters, conv1 kernel, layers followed by a max-pool: 1 = conv1, n = fire<n>).
_VERSIONS = {'1_0': (96, 7, (1, 4, 8)), '1_1': (64, 3, (1, 3, 5))}


def _conv(cin, cout, kernel, *, stride=1, padding=0, kernel_init=_kaiming_uniform, dtype, rngs):
  return layers.Conv(cin, cout, (kernel, kernel), stride, padding=layers.pad(padding),
                     kernel_init=kernel_init, bias_init=_zeros, dtype=dtype, rngs=rngs)


class Fire(nnx.Module):
  """Fire module (paper §3.2): squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat."""

  def __init__(self, cin, squeeze, expand1x1, expand3x3, *, dtype=None, rngs: nnx.Rngs):
    self.squeeze = _conv(cin, squeeze, 1, dtype=dtype, rngs=rngs)
    self.expand1x1 = _conv(squeeze, expand1x1, 1, dtype=dtype, rngs=rngs)
    self.expand3x3 = _conv(squeeze, expand3x3, 3, padding=1, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.squeeze(x))
    return jnp.concatenate([nnx.relu(self.expand1x1(x)), nnx.relu(self.expand3x3(x))], axis=-1)


class SqueezeNet(nnx.Module):
  """SqueezeNet `version` '1_0' or '1_1' as torchvision builds it."""

  def __init__(self, num_classes: int = 1000, *, version: str = '1_0', dropout: float = 0.5,
               dtype=None, rngs: nnx.Rngs):
    if version not in _VERSIONS:
      raise ValueError(f'unknown SqueezeNet version {version!r}; use one of {sorted(_VERSIONS)}')
    self.name = f'squeezenet{version}'
    self.min_input_size = {'1_0': 21, '1_1': 17}[version]
    width, kernel, self.pool_after = _VERSIONS[version]
    self.conv1 = _conv(3, width, kernel, stride=2, dtype=dtype, rngs=rngs)
    fires, cin = [], width
    for squeeze, e1, e3 in _FIRES:
      fires.append(Fire(cin, squeeze, e1, e3, dtype=dtype, rngs=rngs))
      cin = e1 + e3
    for i, fire in enumerate(fires):
      setattr(self, f'fire{i + 2}', fire)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.final_conv = _conv(cin, num_classes, 1, kernel_init=nnx.initializers.normal(0.01),
                            dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = nnx.relu(self.conv1(x))
    for n in range(2, 10):
      if n - 1 in self.pool_after:
        x = layers.max_pool(x, 3, 2, ceil_mode=True)
      x = getattr(self, f'fire{n}')(x)
    x = nnx.relu(self.final_conv(self.dropout(x, deterministic=not train)))
    return layers.global_avg_pool(x).astype(jnp.float32)


_PAPER = 'Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters'
register('squeezenet1_0', SqueezeNet, kwargs={'version': '1_0'}, family='squeezenet', paper=_PAPER,
         params=1_248_424, min_input_size=21, top1=58.092, top5=80.420,
         source='torchvision IMAGENET1K_V1', input_convention='torchvision',
         eval_geometry='torchvision')
register('squeezenet1_1', SqueezeNet, kwargs={'version': '1_1'}, family='squeezenet',
         paper=_PAPER + ' (v1.1, forresti/SqueezeNet)', params=1_235_496, min_input_size=17,
         top1=58.178, top5=80.624, source='torchvision IMAGENET1K_V1',
         input_convention='torchvision', eval_geometry='torchvision')
register('squeezenet_tiny', SqueezeNet, kwargs={'version': '1_1'}, family='squeezenet',
         paper=_PAPER + ' (v1.1 at 32 px: already small, for tests and runlocal)', params=None,
         input_size=32, min_input_size=17, eval_resize=36, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
