"""GoogLeNet / Inception v1 (Szegedy et al. 2015, arXiv 1409.4842) as torchvision builds it.

Paper §5 and Table 1: a 7x7/2 conv stem, nine Inception modules (parallel 1x1, 1x1 -> 3x3,
1x1 -> 5x5 and 3x3 max-pool -> 1x1 branches, concatenated), global average pooling, dropout, one
linear layer; two auxiliary classifiers on 4a and 4d (avg-pool, 1x1 conv 128, FC 1024, dropout 0.7,
linear) whose losses are added with weight 0.3 during training only.

torchvision's port of the TF weights (the default here) differs from the paper: every conv is
Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU and there is no LRN; the "5x5" branch is a 3x3 conv
(kept for weight compatibility, pytorch/vision#906); the max-pool before 5a is 2x2/2; all
max-pools use ceil mode; dropout 0.2. `paper=True` restores the true 5x5 branch, the 3x3/2
max-pool before 5a and dropout 0.4 (BatchNorm stays, LRN stays out). Both layouts pool the aux
heads' input adaptively to 4x4: the paper's 5x5/3 average pool gives 4x4 only near 224 px. `transform_input=True` maps ImageNet-normalised input to the
[-1, 1] scaling of the ported TF weights (torchvision turns it on with pretrained weights).
Init as torchvision: truncated normal (std 0.01, cut at +-2) for conv and linear weights, PyTorch's
default for linear biases.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import IMAGENET_MEAN, IMAGENET_STD, register

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of 3a ... 5b: paper Table 1.
INCEPTION_CHANNELS = {
    'inception3a': (64, 96, 128, 16, 32, 32),
    'inception3b': (128, 128, 192, 32, 96, 64),
    'inception4a': (192, 96, 208, 16, 48, 64),
    'inception4b': (160, 112, 224, 24, 64, 64),
    'inception4c': (128, 128, 256, 24, 64, 64),
    'inception4d': (112, 144, 288, 32, 64, 64),
    'inception4e': (256, 160, 320, 32, 128, 128),
    'inception5a': (256, 160, 320, 32, 128, 128),
    'inception5b': (384, 192, 384, 48, 128, 128),
}
_INIT = layers.trunc_normal(0.01)


def transform_input(x):
  """torchvision's `transform_input`: ImageNet mean/std normalisation -> (x_raw - 0.5) / 0.5."""
  std = jnp.asarray(IMAGENET_STD, x.dtype)
  mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
  return x * (std / 0.5) + (mean - 0.5) / 0.5


def _run(convs, x, train):
  for conv in convs:
    x = conv(x, train=train)
  return x


class Inception(nnx.Module):
  """One Inception module (paper Fig. 2b). `branch4` is the 1x1 conv after the branch's max-pool."""

  def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
               pool_proj: int, *, kernel5: int, dtype, rngs: nnx.Rngs):
    conv = functools.partial(layers.ConvBN, eps=1e-3, kernel_init=_INIT, dtype=dtype, rngs=rngs)
    self.branch1 = conv(cin, ch1x1, 1)
    self.branch2 = nnx.List([conv(cin, ch3x3red, 1), conv(ch3x3red, ch3x3, 3, padding=1)])
    self.branch3 = nnx.List([conv(cin, ch5x5red, 1),
                             conv(ch5x5red, ch5x5, kernel5, padding=kernel5 // 2)])
    self.branch4 = conv(cin, pool_proj, 1)
    self.out_ch = ch1x1 + ch3x3 + ch5x5 + pool_proj

  def __call__(self, x, *, train: bool = False):
    pooled = layers.max_pool(x, 3, 1, padding=1, ceil_mode=True)
    return jnp.concatenate([self.branch1(x, train=train), _run(self.branch2, x, train),
                            _run(self.branch3, x, train), self.branch4(pooled, train=train)],
                           axis=-1)


class InceptionAux(nnx.Module):
  """Auxiliary classifier (paper §5): pool to 4x4, 1x1 conv 128, FC 1024 + ReLU, dropout 0.7."""

  def __init__(self, cin: int, num_classes: int, *, width: int = 128, fc_features: int = 1024,
               dtype, rngs: nnx.Rngs):
    self.conv = layers.ConvBN(cin, width, 1, eps=1e-3, kernel_init=_INIT, dtype=dtype, rngs=rngs)
    self.fc1 = layers.linear(16 * width, fc_features, kernel_init=_INIT,
                          bias_init=layers.torch_default_bias_init(16 * width), dtype=dtype,
                          rngs=rngs)
    self.fc2 = layers.linear(fc_features, num_classes, kernel_init=_INIT,
                          bias_init=layers.torch_default_bias_init(fc_features), dtype=dtype,
                          rngs=rngs)
    self.dropout = nnx.Dropout(0.7, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    x = self.conv(layers.adaptive_avg_pool(x, 4), train=train)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch's (C, H, W) flatten
    x = self.dropout(nnx.relu(self.fc1(x)), deterministic=not train)
    return self.fc2(x)


class GoogLeNet(nnx.Module):
  """torchvision's GoogLeNet, or with `paper=True` the paper's layout (see module doc).

  `__call__(x, train=True)` returns `(logits, (aux1, aux2))` when `aux_logits` is on (aux1 on 4a,
  aux2 on 4d); otherwise, and always in eval mode, the logits.
  """

  def __init__(self, num_classes: int = 1000, *, aux_logits: bool = False,
               transform_input: bool = False, paper: bool = False, width: float = 1.0,
               dtype=None, rngs: nnx.Rngs):
    self.name = 'googlenet_paper' if paper else 'googlenet'
    self.min_input_size = 31 if paper else 15  # paper: the 3x3/2 pool before 5a needs 3x3 maps
    self.transform_input = transform_input
    self.paper = paper
    c = lambda n: max(1, int(n * width))
    conv = functools.partial(layers.ConvBN, eps=1e-3, kernel_init=_INIT, dtype=dtype, rngs=rngs)
    self.conv1 = conv(3, c(64), 7, 2, padding=3)
    self.conv2 = conv(c(64), c(64), 1)
    self.conv3 = conv(c(64), c(192), 3, padding=1)
    cin = c(192)
    for name, channels in INCEPTION_CHANNELS.items():
      module = Inception(cin, *map(c, channels), kernel5=5 if paper else 3, dtype=dtype, rngs=rngs)
      setattr(self, name, module)
      cin = module.out_ch
    self.aux_logits = aux_logits
    if aux_logits:
      aux = functools.partial(InceptionAux, num_classes=num_classes, width=c(128),
                              fc_features=c(1024), dtype=dtype, rngs=rngs)
      self.aux1 = aux(self.inception4a.out_ch)
      self.aux2 = aux(self.inception4d.out_ch)
    self.dropout = nnx.Dropout(0.4 if paper else 0.2, rngs=rngs)
    self.fc = layers.linear(cin, num_classes, kernel_init=_INIT,
                         bias_init=layers.torch_default_bias_init(cin), dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    if self.transform_input:
      x = transform_input(x)
    pool = functools.partial(layers.max_pool, kernel=3, stride=2, ceil_mode=True)
    x = pool(self.conv1(x, train=train))
    x = pool(self.conv3(self.conv2(x, train=train), train=train))
    x = pool(self.inception3b(self.inception3a(x, train=train), train=train))
    x = self.inception4a(x, train=train)
    with_aux = train and self.aux_logits
    aux1 = self.aux1(x, train=train) if with_aux else None
    x = self.inception4d(self.inception4c(self.inception4b(x, train=train), train=train),
                         train=train)
    aux2 = self.aux2(x, train=train) if with_aux else None
    x = self.inception4e(x, train=train)
    x = pool(x) if self.paper else layers.max_pool(x, 2, 2, ceil_mode=True)
    x = self.inception5b(self.inception5a(x, train=train), train=train)
    x = self.dropout(layers.global_avg_pool(x), deterministic=not train)
    logits = self.fc(x).astype(jnp.float32)
    if with_aux:
      return logits, (aux1.astype(jnp.float32), aux2.astype(jnp.float32))
    return logits


_PAPER = 'Szegedy et al. 2015, Going Deeper with Convolutions (arXiv 1409.4842)'
register('googlenet', GoogLeNet, family='googlenet', paper=_PAPER + ' (torchvision port)',
         params=6_624_904, min_input_size=15, top1=69.778, top5=89.530,
         source='torchvision IMAGENET1K_V1 (ported from TF)',
         input_convention='torchvision', eval_geometry='torchvision')
register('googlenet_paper', GoogLeNet, kwargs={'paper': True}, family='googlenet',
         paper=_PAPER + ' (true 5x5 branch, 3x3/2 pool before 5a; BatchNorm, no LRN)',
         params=7_005_832, min_input_size=31, top5=89.93,
         source='paper Table 3 (1 model, 1 crop: top-5 error 10.07%)',
         input_convention='tf_inception', eval_geometry='exact')
register('googlenet_tiny', GoogLeNet, kwargs={'width': 0.125}, family='googlenet',
         paper=_PAPER + ' (1/8 width, for tests)', params=None, input_size=32, min_input_size=15,
         eval_resize=37, tiny=True, input_convention='torchvision', eval_geometry='exact')
