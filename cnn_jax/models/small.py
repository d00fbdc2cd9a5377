"""Small networks with one switch per classic idea, for the experiments of docs/tour.md.

- `TourCNN`: a 4-weight-layer CNN in the spirit of AlexNet's CIFAR-10 network (Krizhevsky et al. 2012,
  §3.1 Fig. 1) whose switches are the ideas the classic papers argued for: ReLU vs tanh (§3.1), LRN
  (§3.3), overlapping pooling (§3.4), dropout (§4.2), a stack of two 3x3 convs instead of one 5x5
  (VGG, Simonyan & Zisserman 2015 §2.3), BatchNorm (Ioffe & Szegedy 2015), a 1x1-conv + global
  average pooling head instead of FC layers (NiN, Lin et al. 2014 §3.2), and an auxiliary classifier
  on the intermediate features (GoogLeNet, Szegedy et al. 2015 §5).
- `TourResNet`: the CIFAR ResNet of He et al. 2016 §4.2 (3x3 convs, three stages of n blocks with
  16/32/64 channels, 6n+2 weight layers), with or without the identity shortcuts (plain vs
  residual, Fig. 6). Where the shape changes, the shortcut is a 1x1 projection (option B).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers
from cnn_jax.models.registry import register

_ACTIVATIONS = {'relu': nnx.relu, 'tanh': jnp.tanh}


class TourCNN(nnx.Module):
  """conv(w) -> pool -> conv(2w) -> pool -> conv(4w) -> head (w = width); switches as above.

  kernels: 'large' = one 5x5 conv per stage, 'stacked' = two 3x3 convs (same receptive field), the
  first with half the stage's channels (= its input width after stage 1), as VGG stacks at constant
  width: 9 C^2 + 18 C^2 weights against 50 C^2 for a 5x5 from C to 2C channels.
  pool: 'overlap' = max-pool 3/2 (AlexNet), 'plain' = 2/2. head: 'fc' = FC-256 -> FC-classes with
  dropout before each, 'gap' = 1x1 conv to the classes, then global average pooling (NiN).
  aux_head: a GAP -> FC classifier on the second stage's output, returned as `(logits, (aux,))`
  when training.
  """

  min_input_size = 8

  def __init__(self, num_classes: int = 10, *, activation: str = 'relu', lrn: bool = False,
               pool: str = 'plain', dropout: float = 0.0, batch_norm: bool = False,
               kernels: str = 'large', head: str = 'fc', aux_head: bool = False,
               width: int = 16, dtype=None, rngs: nnx.Rngs):
    if activation not in _ACTIVATIONS or pool not in ('overlap', 'plain') or head not in ('fc', 'gap') \
        or kernels not in ('large', 'stacked'):
      raise ValueError(f'TourCNN: bad switch activation={activation!r} pool={pool!r} head={head!r} '
                       f"kernels={kernels!r}; see the class docstring for the choices")
    self.name = 'tour_cnn'
    self.act = _ACTIVATIONS[activation]
    self.lrn, self.pool, self.head = lrn, pool, head
    widths = (width, 2 * width, 4 * width)

    def conv(cin, cout, k):
      return layers.Conv(cin, cout, (k, k), padding=layers.pad(k // 2), use_bias=not batch_norm,
                         dtype=dtype, rngs=rngs)

    self.convs = nnx.List()
    self.norms = nnx.List()
    cin = 3
    for cout in widths:
      stage_widths = [cout] if kernels == 'large' else [cout // 2, cout]
      stage = [conv(a, b, 5 if kernels == 'large' else 3)
               for a, b in zip([cin] + stage_widths[:-1], stage_widths)]
      self.convs.append(nnx.List(stage))
      self.norms.append(nnx.List(
          [layers.batch_norm(w, dtype=dtype, rngs=rngs) for w in stage_widths] if batch_norm else []))
      cin = cout
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.fc1 = layers.linear(widths[2], 256, dtype=dtype, rngs=rngs) if head == 'fc' else None
    self.classifier = (layers.linear(256, num_classes, dtype=dtype, rngs=rngs) if head == 'fc' else
                       layers.Conv(widths[2], num_classes, (1, 1), dtype=dtype, rngs=rngs))
    self.aux = layers.linear(widths[1], num_classes, dtype=dtype, rngs=rngs) if aux_head else None

  def _stage(self, i, x, train):
    for j, conv in enumerate(self.convs[i]):
      x = conv(x)
      if len(self.norms[i]):
        x = self.norms[i][j](x, use_running_average=not train)
      x = self.act(x)
    if self.lrn:
      x = layers.local_response_norm(x)
    if i < 2:
      x = layers.max_pool(x, 3, 2, 1) if self.pool == 'overlap' else layers.max_pool(x, 2, 2)
    return x

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = self._stage(0, x, train)
    x = self._stage(1, x, train)
    aux = self.aux(layers.global_avg_pool(x)) if self.aux is not None and train else None
    x = self._stage(2, x, train)
    if self.head == 'fc':
      # Global max over the last stage keeps the FC head the same size at any resolution.
      x = jnp.max(x, axis=(1, 2))
      x = self.act(self.fc1(self.dropout(x, deterministic=not train)))
      logits = self.classifier(self.dropout(x, deterministic=not train))
    else:
      logits = layers.global_avg_pool(self.classifier(self.dropout(x, deterministic=not train)))
    logits = logits.astype(jnp.float32)
    return (logits, (aux.astype(jnp.float32),)) if aux is not None else logits


class _Block(nnx.Module):
  """Two 3x3 conv-BN layers; with `residual`, y = relu(F(x) + shortcut(x)) (He et al. 2016 Fig. 2)."""

  def __init__(self, cin, cout, stride, residual, dtype, rngs):
    self.conv1 = layers.ConvBN(cin, cout, 3, stride, 1, dtype=dtype, rngs=rngs)
    self.conv2 = layers.ConvBN(cout, cout, 3, 1, 1, relu=False, dtype=dtype, rngs=rngs)
    self.residual = residual
    self.project = (layers.ConvBN(cin, cout, 1, stride, relu=False, dtype=dtype, rngs=rngs)
                    if residual and (stride != 1 or cin != cout) else None)

  def __call__(self, x, *, train):
    y = self.conv2(self.conv1(x, train=train), train=train)
    if self.residual:
      y = y + (self.project(x, train=train) if self.project is not None else x)
    return nnx.relu(y)


class TourResNet(nnx.Module):
  """He et al. 2016 §4.2: 6n+2 layers (n blocks per stage), plain or residual."""

  min_input_size = 4

  def __init__(self, num_classes: int = 10, *, blocks_per_stage: int = 3, residual: bool = True,
               width: int = 16, dtype=None, rngs: nnx.Rngs):
    self.name = 'tour_resnet'
    self.stem = layers.ConvBN(3, width, 3, 1, 1, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List()
    cin = width
    for stage in range(3):
      cout = width * 2 ** stage
      for b in range(blocks_per_stage):
        stride = 2 if stage > 0 and b == 0 else 1
        self.blocks.append(_Block(cin, cout, stride, residual, dtype, rngs))
        cin = cout
    self.fc = layers.linear(cin, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    x = self.stem(x, train=train)
    for block in self.blocks:
      x = block(x, train=train)
    return self.fc(layers.global_avg_pool(x)).astype(jnp.float32)


_TOUR = 'docs/tour.md experiments (small networks, not published models)'
register('tour_cnn', TourCNN, family='tour', paper=_TOUR, params=None, input_size=32,
         min_input_size=8, eval_resize=32, tiny=True, input_convention='torchvision',
         eval_geometry='exact')
register('tour_resnet', TourResNet, family='tour', paper=_TOUR, params=None, input_size=32,
         min_input_size=4, eval_resize=32, tiny=True, input_convention='torchvision',
         eval_geometry='exact')
