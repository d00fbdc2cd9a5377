"""ENet as an ImageNet classifier: the ENet encoder, global average pooling and a linear layer.

Paszke, Chaurasia, Kim, Culurciello 2016, "ENet: A Deep Neural Network Architecture for Real-Time
Semantic Segmentation" (arXiv 1606.02147), §3 and Table 1, layer by layer as the authors' Torch code
(e-lab/ENet-training `train/models/encoder.lua`) builds it:
- initial block (Fig. 2a): [3x3/2 conv, 13 filters, padding 1, with bias; 2x2/2 max-pool] ->
  concat (16) -> BN (eps 1e-3) -> PReLU;
- bottleneck (Fig. 2b): 1x1 projection to out/4 (2x2/2 when downsampling), BN, PReLU; the main conv
  (3x3; 3x3 dilated; or asymmetric 1x5 then 5x1 in (h, w) order, as encoder.lua's 5-wide then 5-high);
  BN, PReLU; 1x1 expansion; BN; spatial dropout (whole channels; p = 0.01 in the first five
  bottlenecks, 0.1 after). No bias in the projections (§4), a bias on the main conv (on the second
  conv of an asymmetric pair). Shortcut: identity, with a 2x2/2 max-pool when downsampling and zero
  channels appended to match the width. Sum -> PReLU;
- stage 1: bottleneck1.0 downsampling 16 -> 64, four regular bottlenecks; stage 2: bottleneck2.0
  downsampling 64 -> 128, then regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
  asymmetric 5, dilated 16; stage 3: stage 2 without bottleneck2.0.

The classifier is ours: the paper defines no ImageNet head, and Canziani et al. 2016 ("ENet for
ImageNet") do not describe theirs. After stage 3 come global average pooling and Linear(128 -> 1000)
in place of the segmentation decoder (stages 4-5). `extra_downsampling=True` (`enet_v2`) adds a
downsampling bottleneck 128 -> 128 after stage 2 and after stage 3, as in E. Culurciello's "Training
ENet on ImageNet" (2016, "ENet V2"), so that a 224 px image ends at 7x7 rather than 28x28.
Init: Torch7's defaults (conv and linear U(+-1/sqrt(fan_in)) for weights and biases), BN 1/0,
PReLU slopes 0.25. The parameter counts in the registry are computed from this code, not published.

One deviation, for odd image sizes only: the initial max-pool uses ceil mode so that its output
matches the conv's (Torch's floor pool would make the concat fail); for even sizes it is the same.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register


def _conv(cin, cout, kernel, stride=1, padding=(0, 0), dilation=1, *, bias, dtype, rngs):
  kh, kw = kernel
  ph, pw = padding
  return layers.Conv(cin, cout, (kh, kw), stride, padding=((ph, ph), (pw, pw)),
                     kernel_dilation=dilation, use_bias=bias,
                     kernel_init=layers.torch_default_kernel_init,
                     bias_init=layers.torch_default_bias_init(cin * kh * kw), dtype=dtype,
                     rngs=rngs)


def _prelu(channels, dtype):
  """Per-channel PReLU (Torch nn.PReLU(n)): nnx.PReLU takes the slope array's shape from its init."""
  return nnx.PReLU(jnp.full((channels,), 0.25), dtype=dtype)


class InitialBlock(nnx.Module):
  """Fig. 2a: [3x3/2 conv (16 - 3 filters), 2x2/2 max-pool] -> concat -> BN -> PReLU."""

  def __init__(self, cout=16, *, dtype=None, rngs: nnx.Rngs):
    self.conv = _conv(3, cout - 3, (3, 3), 2, (1, 1), bias=True, dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(cout, eps=1e-3, dtype=dtype, rngs=rngs)
    self.prelu = _prelu(cout, dtype)

  def __call__(self, x, *, train: bool = False):
    x = jnp.concatenate([self.conv(x), layers.max_pool(x, 2, 2, ceil_mode=True)], axis=-1)
    return self.prelu(self.bn(x, use_running_average=not train))


class Bottleneck(nnx.Module):
  """Fig. 2b. `kind`: 'regular', 'downsampling', 'dilated' (with `dilation`) or 'asymmetric'."""

  def __init__(self, cin, cout, kind='regular', *, dilation=1, dropout=0.1, dtype=None,
               rngs: nnx.Rngs):
    inner = cout // 4
    self.downsample = kind == 'downsampling'
    self.pad_channels = cout - cin
    bn = lambda n: layers.batch_norm(n, eps=1e-3, dtype=dtype, rngs=rngs)
    k = 2 if self.downsample else 1
    self.proj = _conv(cin, inner, (k, k), k, bias=False, dtype=dtype, rngs=rngs)
    self.bn1, self.prelu1 = bn(inner), _prelu(inner, dtype)
    if kind == 'asymmetric':
      self.conv = nnx.List([
          _conv(inner, inner, (1, 5), padding=(0, 2), bias=False, dtype=dtype, rngs=rngs),
          _conv(inner, inner, (5, 1), padding=(2, 0), bias=True, dtype=dtype, rngs=rngs)])
    else:
      self.conv = nnx.List([_conv(inner, inner, (3, 3), padding=(dilation, dilation),
                                  dilation=dilation, bias=True, dtype=dtype, rngs=rngs)])
    self.bn2, self.prelu2 = bn(inner), _prelu(inner, dtype)
    self.expand = _conv(inner, cout, (1, 1), bias=False, dtype=dtype, rngs=rngs)
    self.bn3 = bn(cout)
    self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2), rngs=rngs)  # spatial dropout
    self.prelu_out = _prelu(cout, dtype)

  def __call__(self, x, *, train: bool = False):
    y = self.prelu1(self.bn1(self.proj(x), use_running_average=not train))
    for conv in self.conv:
      y = conv(y)
    y = self.prelu2(self.bn2(y, use_running_average=not train))
    y = self.bn3(self.expand(y), use_running_average=not train)
    y = self.dropout(y, deterministic=not train)
    if self.downsample:
      x = layers.max_pool(x, 2, 2)
    if self.pad_channels:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.pad_channels)))
    return self.prelu_out(x + y)


# Stages 2 and 3 after bottleneck2.0 (Table 1): (kind, dilation).
_STAGE = (('regular', 1), ('dilated', 2), ('asymmetric', 1), ('dilated', 4),
          ('regular', 1), ('dilated', 8), ('asymmetric', 1), ('dilated', 16))


class ENet(nnx.Module):
  """The ENet encoder (Table 1, stages 1-3) + global average pool + Linear (the head is ours)."""

  def __init__(self, num_classes: int = 1000, *, extra_downsampling: bool = False, dtype=None,
               rngs: nnx.Rngs):
    self.name = 'enet'
    self.min_input_size = 31 if extra_downsampling else 7
    self.initial = InitialBlock(dtype=dtype, rngs=rngs)
    specs = [('bottleneck1_0', 16, 64, 'downsampling', 1)]
    specs += [(f'bottleneck1_{i}', 64, 64, 'regular', 1) for i in range(1, 5)]
    specs += [('bottleneck2_0', 64, 128, 'downsampling', 1)]
    for stage in (2, 3):
      specs += [(f'bottleneck{stage}_{i}', 128, 128, kind, d)
                for i, (kind, d) in enumerate(_STAGE, start=1)]
      if extra_downsampling:
        specs.append((f'bottleneck{stage}_9', 128, 128, 'downsampling', 1))
    for i, (name, cin, cout, kind, dilation) in enumerate(specs):
      setattr(self, name, Bottleneck(cin, cout, kind, dilation=dilation,
                                     dropout=0.01 if i < 5 else 0.1, dtype=dtype, rngs=rngs))
    self.bottleneck_names = tuple(name for name, *_ in specs)
    self.classifier = layers.linear(128, num_classes, kernel_init=layers.torch_default_kernel_init,
                                 bias_init=layers.torch_default_bias_init(128), dtype=dtype,
                                 rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = self.initial(x, train=train)
    for name in self.bottleneck_names:
      x = getattr(self, name)(x, train=train)
    return self.classifier(layers.global_avg_pool(x)).astype(jnp.float32)


_PAPER = 'Paszke et al. 2016, ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation'
register('enet', ENet, family='enet', paper=_PAPER + ' (encoder + GAP + linear head, ours)',
         params=467_156, min_input_size=7,
         source='no published ImageNet accuracy; params computed from this code',
         input_convention='torch7_meanstd', eval_geometry='exact')
register('enet_v2', ENet, kwargs={'extra_downsampling': True}, family='enet',
         paper=_PAPER + ' (ENet V2 for ImageNet, Culurciello 2016 blog "Training ENet on ImageNet")',
         params=527_764, min_input_size=31,
         source='no published ImageNet accuracy; params computed from this code',
         input_convention='torch7_meanstd', eval_geometry='exact')
register('enet_tiny', ENet, family='enet', paper=_PAPER + ' (enet at 32 px, for tests and runlocal)',
         params=None, input_size=32, min_input_size=7, eval_resize=36, tiny=True,
         input_convention='torch7_meanstd', eval_geometry='exact')
