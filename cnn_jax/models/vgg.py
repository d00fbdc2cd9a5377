"""VGG (Simonyan & Zisserman 2015, arXiv 1409.1556): configurations A, B, D, E as torchvision builds them.

Paper §2.1-2.3 and Table 1: 3x3 convs (stride 1, padding 1) with ReLU, five 2x2/2 max-pools,
FC-4096, FC-4096, FC-num_classes with dropout 0.5 on the two hidden FC layers (§3.1). As in
torchvision's `vgg.py`: an adaptive average pool to 7x7 before the classifier (identity at 224),
dropout after each hidden ReLU, `_bn` variants with Conv -> BatchNorm (eps 1e-5) -> ReLU, and
init kaiming_normal(fan_out) for convs, N(0, 0.01) for linears, zero biases. The paper's config C
(with 1x1 convs) and A-LRN are not built, as in torchvision.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

# Conv widths per stage; a max-pool follows each stage (paper Table 1).
CONFIGS = {
    'A': ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    'B': ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    'D': ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    'E': ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nnx.Module):
  """VGG with `config` in CONFIGS (or explicit per-stage widths); `batch_norm` for the _bn nets."""

  name = 'vgg'
  min_input_size = 32  # five 2x2/2 pools

  def __init__(self, num_classes: int = 1000, *, config: str | Sequence[Sequence[int]] = 'D',
               batch_norm: bool = False, fc_features: int = 4096, dropout: float = 0.5,
               dtype=None, rngs: nnx.Rngs):
    stages = CONFIGS[config] if isinstance(config, str) else config
    widths = [c for stage in stages for c in stage]
    ends = [len(stage) for stage in stages]
    self.pool_after = tuple(sum(ends[:i + 1]) - 1 for i in range(len(ends)))  # convs before a pool
    self.convs = nnx.List([
        layers.Conv(cin, cout, (3, 3), padding=layers.pad(1),
                    kernel_init=layers.kaiming_normal_fan_out, bias_init=nnx.initializers.zeros,
                    dtype=dtype, rngs=rngs)
        for cin, cout in zip([3, *widths[:-1]], widths)])
    self.bns = nnx.List(
        [layers.batch_norm(c, dtype=dtype, rngs=rngs) for c in widths] if batch_norm else [])
    fc_in = (7 * 7 * widths[-1], fc_features, fc_features)
    fc_out = (fc_features, fc_features, num_classes)
    self.fcs = nnx.List([
        layers.linear(i, o, kernel_init=nnx.initializers.normal(0.01),
                   bias_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)
        for i, o in zip(fc_in, fc_out)])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def features(self, x, *, train: bool = False):
    """The conv stack: (N, H, W, 3) -> (N, H/32, W/32, 512)."""
    for i, conv in enumerate(self.convs):
      x = conv(x)
      x = (self.bns[i](x, use_running_average=not train, activation='relu') if self.bns
           else nnx.relu(x))
      if i in self.pool_after:
        x = layers.max_pool(x, 2, 2)
    return x

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = layers.adaptive_avg_pool(self.features(x, train=train), 7)
    # Flatten in PyTorch's (C, H, W) order so that torchvision classifier weights map directly.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for fc in self.fcs[:2]:
      x = self.dropout(nnx.relu(fc(x)), deterministic=not train)
    return self.fcs[2](x).astype(jnp.float32)


_PAPER = 'Simonyan, Zisserman 2015, Very Deep Convolutional Networks (arXiv 1409.1556)'
# name: (config, params, params with BN, top-1, top-5, top-1 BN, top-5 BN) from torchvision.
_PUBLISHED = {
    'vgg11': ('A', 132_863_336, 132_868_840, 69.020, 88.628, 70.370, 89.810),
    'vgg13': ('B', 133_047_848, 133_053_736, 69.928, 89.246, 71.586, 90.374),
    'vgg16': ('D', 138_357_544, 138_365_992, 71.592, 90.382, 73.360, 91.516),
    'vgg19': ('E', 143_667_240, 143_678_248, 72.376, 90.876, 74.218, 91.842),
}
for _name, (_cfg, _p, _p_bn, _t1, _t5, _t1_bn, _t5_bn) in _PUBLISHED.items():
  register(_name, VGG, kwargs={'config': _cfg}, family='vgg', paper=f'{_PAPER}, config {_cfg}',
           params=_p, min_input_size=32, top1=_t1, top5=_t5, source='torchvision IMAGENET1K_V1',
           input_convention='torchvision', eval_geometry='torchvision')
  register(f'{_name}_bn', VGG, kwargs={'config': _cfg, 'batch_norm': True}, family='vgg',
           paper=f'{_PAPER}, config {_cfg} + BatchNorm', params=_p_bn, min_input_size=32,
           top1=_t1_bn, top5=_t5_bn, source='torchvision IMAGENET1K_V1',
           input_convention='torchvision', eval_geometry='torchvision')
register('vgg_tiny', VGG,
         kwargs={'config': ((8,), (16,), (16, 16), (32,), (32,)), 'batch_norm': True,
                 'fc_features': 32},
         family='vgg', paper=_PAPER + ' (narrow A + BatchNorm, for tests)', params=None,
         input_size=32, min_input_size=32, eval_resize=37, tiny=True,
         input_convention='torchvision', eval_geometry='exact')
