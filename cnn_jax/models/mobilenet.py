"""MobileNetV2, torchvision-compatible (layout, init and module names).

Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (arXiv 1801.04381):
the inverted residual block (§3.3, Table 1: 1x1 expansion -> ReLU6 -> 3x3 depthwise -> ReLU6 ->
linear 1x1 projection, residual when stride 1 and in == out) and the body of Table 2 (t, c, n, s).
As torchvision `mobilenetv2.py` builds it: BN eps 1e-5 after every conv, ReLU6, channel counts rounded
to multiples of 8 (`make_divisible`), last conv 1280 wide (never narrower than that for width > 1),
Dropout(0.2) -> Linear; init: convs kaiming_normal (fan-out), Linear N(0, 0.01), biases 0.

Module names mirror torchvision's: `features[i]` (0: stem, 1-17: blocks with `conv[j]`, 18: last 1x1)
and `classifier`; a conv-BN-ReLU6 unit holds `conv` and `bn` where torchvision has indices 0 and 1.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

# Table 2: expansion t, output channels c, repeats n, stride of the first repeat s.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
  """torchvision's `_make_divisible`: nearest multiple of `divisor`, never 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nnx.Module):
  """torchvision `Conv2dNormActivation`: conv (no bias, 'same' padding) -> BN -> ReLU6."""

  def __init__(self, cin, cout, kernel=3, stride=1, groups=1, *, dtype=None, rngs: nnx.Rngs):
    self.conv = layers.Conv(cin, cout, (kernel, kernel), stride,
                            padding=layers.pad((kernel - 1) // 2), feature_group_count=groups,
                            use_bias=False, kernel_init=layers.kaiming_normal_fan_out,
                            dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    return self.bn(self.conv(x), use_running_average=not train, activation='relu6')


class InvertedResidual(nnx.Module):
  """§3.3: [1x1 expand -> ReLU6] -> 3x3 depthwise -> ReLU6 -> 1x1 linear projection -> BN (+ x)."""

  def __init__(self, cin, cout, stride, expand_ratio, *, dtype=None, rngs: nnx.Rngs):
    hidden = int(round(cin * expand_ratio))
    self.use_residual = stride == 1 and cin == cout
    units = [ConvBNReLU6(cin, hidden, 1, dtype=dtype, rngs=rngs)] if expand_ratio != 1 else []
    units.append(ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, dtype=dtype, rngs=rngs))
    projection = layers.Conv(hidden, cout, (1, 1), use_bias=False,
                             kernel_init=layers.kaiming_normal_fan_out, dtype=dtype, rngs=rngs)
    self.conv = nnx.List([*units, projection, layers.batch_norm(cout, dtype=dtype, rngs=rngs)])

  def __call__(self, x, *, train: bool = False):
    *units, projection, bn = self.conv
    y = x
    for unit in units:
      y = unit(y, train=train)
    y = bn(projection(y), use_running_average=not train)
    return x + y if self.use_residual else y


class MobileNetV2(nnx.Module):
  """MobileNetV2 with width multiplier `width_mult` (Table 2 at 1.0: 3,504,872 params)."""

  name = 'mobilenet_v2'
  min_input_size = 1

  def __init__(self, num_classes: int = 1000, *, width_mult: float = 1.0, dropout: float = 0.2,
               setting=_SETTING, last_channel: int = 1280, dtype=None, rngs: nnx.Rngs):
    cin = make_divisible(32 * width_mult)
    last = make_divisible(last_channel * max(1.0, width_mult))
    features = [ConvBNReLU6(3, cin, 3, 2, dtype=dtype, rngs=rngs)]
    for t, c, n, s in setting:
      cout = make_divisible(c * width_mult)
      for i in range(n):
        features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, dtype=dtype, rngs=rngs))
        cin = cout
    features.append(ConvBNReLU6(cin, last, 1, dtype=dtype, rngs=rngs))
    self.features = nnx.List(features)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.classifier = layers.linear(last, num_classes, kernel_init=nnx.initializers.normal(0.01),
                                 dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    for block in self.features:
      x = block(x, train=train)
    x = self.dropout(layers.global_avg_pool(x), deterministic=not train)
    return self.classifier(x).astype(jnp.float32)


_PAPER = 'Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks'
register('mobilenet_v2', MobileNetV2, family='mobilenet', paper=_PAPER, params=3_504_872,
         min_input_size=1, top1=71.878, top5=90.286, source='torchvision IMAGENET1K_V1',
         input_convention='torchvision', eval_geometry='torchvision')
register('mobilenet_v2_tiny', MobileNetV2,
         kwargs={'width_mult': 0.25, 'last_channel': 64,
                 'setting': ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 1, 2))},
         family='mobilenet', paper=_PAPER + ' (narrow and shallow, for tests)', params=None,
         input_size=32, min_input_size=1, eval_resize=36, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
