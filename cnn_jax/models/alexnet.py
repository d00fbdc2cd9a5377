"""AlexNet: the 2012 two-tower network, torchvision's single-tower variant, and BN-AlexNet.

- Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
  Networks", §3 and Fig. 2 (table `PAPER_2012`). The two GPUs are `feature_group_count=2` on conv2,
  conv4 and conv5; LRN (§3.3) within each tower; overlapping max-pool 3/2 (§3.4); dropout 0.5 after
  fc6 and fc7 (§4.2); init N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere
  (§5). The paper says 224x224 input, but its arithmetic needs 227 (as in Caffe's bvlc_alexnet).
- torchvision `alexnet`: the "One weird trick" layout (Krizhevsky 2014, arXiv 1404.5997; table
  `ONE_WEIRD_TRICK`), 64-192-384-256-256, conv1 padding 2, no LRN, dropout before fc6 and fc7.
- BN-AlexNet: the same layout with BatchNorm (eps 1e-3) after every conv and hidden FC layer and no
  dropout, as soumith/imagenet-multiGPU.torch `alexnetowtbn` (the network Canziani et al. used).

Model parallelism (`AlexNet2012(tower_axis='model')`, issue #6): the paper's two-GPU split (§3.2)
as a sharding of the same network over a mesh axis of size `groups`, kept apart from the forward
pass in `TowerSplit` at the end of this file. Parameters are identical to the unsplit network's, so
checkpoints move freely between the two.

All three end the feature extractor with an adaptive average pool to 6x6 (identity at the default
resolution), as torchvision does, so that smaller images still fit the 9216-wide fc6.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from cnn_jax import kernels
from cnn_jax.models import layers
from cnn_jax.models.registry import register


class Conv(NamedTuple):
  """A conv layer of a table, followed by ReLU, then LRN and a 3x3/2 max-pool where marked."""
  name: str
  channels: int  # output channels, both towers together
  kernel: int
  stride: int
  padding: int
  grouped: bool = False  # each tower convolves only its own half of the input channels
  bias: float | None = None  # initial bias; None: torch's default init
  lrn: bool = False
  pool: bool = False


class FC(NamedTuple):
  """A fully connected layer of a table; all but the last are followed by ReLU."""
  name: str
  units: int | None  # None: num_classes
  bias: float | None = None  # initial bias; None: torch's default init
  dropout: bool = False


# Krizhevsky et al. 2012, §3 and Fig. 2: widths are both GPUs' together, `grouped` convs are the
# ones connected only within a GPU (§3.5), LRN §3.3, overlapping 3x3/2 pools §3.4, biases §5.
PAPER_2012 = (
    #    name     out   k  s  pad grouped bias  lrn    pool
    Conv('conv1',  96, 11, 4, 0,  False,  0.0, True,  True),
    Conv('conv2', 256,  5, 1, 2,  True,   1.0, True,  True),
    Conv('conv3', 384,  3, 1, 1,  False,  0.0, False, False),  # the towers exchange activations
    Conv('conv4', 384,  3, 1, 1,  True,   1.0, False, False),
    Conv('conv5', 256,  3, 1, 1,  True,   1.0, False, True),
)
PAPER_2012_FC = (  # dropout 0.5 after the ReLU (§4.2)
    FC('fc6', 4096, 1.0, dropout=True), FC('fc7', 4096, 1.0, dropout=True), FC('fc8', None, 0.0))

# torchvision `alexnet` (Krizhevsky 2014, "One weird trick", arXiv 1404.5997) and, with BatchNorm
# after every conv and hidden FC layer, soumith's `alexnetowtbn`. Torch's default init throughout.
ONE_WEIRD_TRICK = (
    #    name    out   k  s  pad
    Conv('conv1', 64, 11, 4, 2, pool=True),
    Conv('conv2', 192, 5, 1, 2, pool=True),
    Conv('conv3', 384, 3, 1, 1),
    Conv('conv4', 256, 3, 1, 1),
    Conv('conv5', 256, 3, 1, 1, pool=True),
)
ONE_WEIRD_TRICK_FC = (  # dropout *before* fc6 and fc7, as torchvision
    FC('fc6', 4096, dropout=True), FC('fc7', 4096, dropout=True), FC('fc8', None))

_normal_001 = nnx.initializers.normal(0.01)


class AlexNet2012(nnx.Module):
  """The 2012 network (`PAPER_2012`) as one graph: each grouped conv holds both towers' kernels.

  `groups=2` gives the paper's two towers; conv1 and conv3 see the whole input as in Fig. 2 (conv3
  is where the towers exchange activations; the FC layers are the other place). `tower_axis` names
  a mesh axis of size `groups` to place one tower per device (see `TowerSplit`); the model must
  then be traced under `jax.set_mesh(mesh)`.
  """

  name = 'alexnet2012'
  min_input_size = 67

  def __init__(
      self, num_classes: int = 1000, *,
      channels: Sequence[int] = tuple(c.channels for c in PAPER_2012),
      fc_features: int = PAPER_2012_FC[0].units, groups: int = 2, dropout: float = 0.5,
      lrn: bool = True, tower_axis: str | None = None, dtype=None, rngs: nnx.Rngs,
  ):
    self.split = TowerSplit(tower_axis, groups)
    self.split.check_widths({'conv1': channels[0], 'conv3': channels[2], 'fc6/fc7': fc_features,
                             'fc8': num_classes})
    for spec, cin, cout in zip(PAPER_2012, (3, *channels[:-1]), channels):
      setattr(self, spec.name, layers.Conv(
          cin, cout, (spec.kernel, spec.kernel), spec.stride, padding=layers.pad(spec.padding),
          feature_group_count=groups if spec.grouped else 1, kernel_init=_normal_001,
          bias_init=nnx.initializers.constant(spec.bias), dtype=dtype, rngs=rngs,
          **self.split.conv_options()))
    fc_in = (6 * 6 * channels[-1], fc_features, fc_features)
    for spec, fin, fout in zip(PAPER_2012_FC, fc_in, (fc_features, fc_features, num_classes)):
      setattr(self, spec.name, layers.linear(
          fin, fout, kernel_init=_normal_001, bias_init=nnx.initializers.constant(spec.bias),
          dtype=dtype, rngs=rngs, **self.split.linear_options()))
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.groups = groups
    self.lrn = lrn

  def _conv(self, spec: Conv, x):
    """conv -> ReLU -> LRN -> max-pool, as the table row `spec` says."""
    x = self.split.towers(nnx.relu(getattr(self, spec.name)(x)))
    if spec.lrn and self.lrn:
      x = layers.local_response_norm(x, groups=self.groups)  # within each tower
    if spec.pool:
      x = self.split.max_pool(x, 3, 2)  # within each tower
    return x

  def towers(self, x):
    """conv1..pool2: up to here each tower only sees its own channels (after conv1)."""
    layers.check_input_size(self.name, x, self.min_input_size)
    self.split.check_mesh(self.name)
    for spec in PAPER_2012[:2]:
      x = self._conv(spec, x)
    return x

  def features(self, x):
    """conv1..pool5, (N, H, W, 3) -> (N, 6, 6, C5)."""
    x = self.split.gather(self.towers(x))  # conv3 sees both towers
    for spec in PAPER_2012[2:]:
      x = self._conv(spec, x)
    return layers.adaptive_avg_pool(x, 6)

  def classifier(self, x, *, train: bool = False):
    """fc6..fc8 on flattened features; dropout after the ReLU of fc6 and fc7 (paper §4.2)."""
    *hidden, last = PAPER_2012_FC
    for spec in hidden:
      x = self.split.towers(nnx.relu(getattr(self, spec.name)(x)))
      if spec.dropout:
        x = self.dropout(x, deterministic=not train)
    x = self.split.towers(getattr(self, last.name)(x))
    return self.split.gather(x)  # the logits, whole for the softmax

  def __call__(self, x, *, train: bool = False):
    x = self.features(x)
    # Flatten in PyTorch's (C, H, W) order so that torchvision/caffe fc6 weights map directly.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    return self.classifier(x, train=train).astype(jnp.float32)


class AlexNet(nnx.Module):
  """torchvision's AlexNet (`ONE_WEIRD_TRICK`; with `batch_norm=True`, BN-AlexNet).

  The layers are lists as torchvision's `features` and `classifier` (`convs[i]` is the table's
  row i), so that its state_dict maps by index.
  """

  min_input_size = 63

  def __init__(
      self, num_classes: int = 1000, *,
      channels: Sequence[int] = tuple(c.channels for c in ONE_WEIRD_TRICK),
      fc_features: int = ONE_WEIRD_TRICK_FC[0].units, dropout: float = 0.5,
      batch_norm: bool = False, dtype=None, rngs: nnx.Rngs,
  ):
    self.name = 'bn_alexnet' if batch_norm else 'alexnet'
    self.convs = nnx.List([
        layers.Conv(cin, cout, (spec.kernel, spec.kernel), spec.stride,
                    padding=layers.pad(spec.padding), kernel_init=layers.torch_default_kernel_init,
                    bias_init=layers.torch_default_bias_init(cin * spec.kernel**2), dtype=dtype,
                    rngs=rngs)
        for spec, cin, cout in zip(ONE_WEIRD_TRICK, (3, *channels[:-1]), channels)])
    fc_in = (6 * 6 * channels[-1], fc_features, fc_features)
    self.fcs = nnx.List([
        layers.linear(i, o, kernel_init=layers.torch_default_kernel_init,
                   bias_init=layers.torch_default_bias_init(i), dtype=dtype, rngs=rngs)
        for i, o in zip(fc_in, (fc_features, fc_features, num_classes))])
    self.batch_norm = batch_norm
    if batch_norm:
      bn = lambda n: layers.batch_norm(n, eps=1e-3, dtype=dtype, rngs=rngs)
      self.conv_bns = nnx.List([bn(c) for c in channels])
      self.fc_bns = nnx.List([bn(fc_features), bn(fc_features)])
    self.dropout = nnx.Dropout(0.0 if batch_norm else dropout, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    for i, spec in enumerate(ONE_WEIRD_TRICK):
      x = self.convs[i](x)
      x = (self.conv_bns[i](x, use_running_average=not train, activation='relu')
           if self.batch_norm else nnx.relu(x))
      if spec.pool:
        x = layers.max_pool(x, 3, 2)
    x = layers.adaptive_avg_pool(x, 6)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for i, spec in enumerate(ONE_WEIRD_TRICK_FC[:-1]):
      if spec.dropout:
        x = self.dropout(x, deterministic=not train)
      x = self.fcs[i](x)
      x = (self.fc_bns[i](x, use_running_average=not train, activation='relu')
           if self.batch_norm else nnx.relu(x))
    return self.fcs[-1](x).astype(jnp.float32)


# The two-GPU split --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TowerSplit:
  """The paper's two-GPU split (§3.2) as a sharding over mesh axis `axis` of size `groups`; with
  `axis=None` (one device) every part of it is a no-op.

  Every kernel and bias is sharded over `axis` on its output dimension (conv1..conv5 channels,
  fc6..fc8 units), so each device holds one tower and half of each FC layer. The layers built with
  `conv_options` / `linear_options` compute their own channels or units on each device: the convs
  as explicit towers (`_tower_conv`), the FC layers from their whole (gathered) input. The forward
  pass pins each layer's activations to the towers (`towers`) and gathers them (`gather`) at
  conv3's input and the logits; with the FC inputs, these are where the paper's GPUs communicate.
  """

  axis: str | None
  groups: int

  def check_widths(self, widths: dict[str, int]):
    """Fail clearly unless every layer whose output the towers share splits evenly."""
    uneven = {n: c for n, c in widths.items() if c % self.groups}
    if self.axis is not None and uneven:
      raise ValueError(f'tower_axis={self.axis!r} splits every layer into {self.groups} towers, '
                       f'but {uneven} output widths are not divisible by {self.groups}; use even '
                       'widths or tower_axis=None')

  def check_mesh(self, model: str):
    """Fail clearly unless the current mesh has one device per tower."""
    if self.axis is None:
      return
    mesh = jax.sharding.get_abstract_mesh()
    if self.axis not in mesh.axis_names or mesh.shape[self.axis] != self.groups:
      raise ValueError(
          f'{model}(tower_axis={self.axis!r}) needs a mesh with a {self.axis!r} '
          f'axis of size {self.groups}, one device per tower, but the current mesh is '
          f'{dict(mesh.shape)}; trace it under `with jax.set_mesh(mesh):`, or build the model '
          'with tower_axis=None')

  def _metadata(self, ndim: int):
    """Parameter metadata: output axis (last) over the tower axis; placed by the caller."""
    return {'out_sharding': (None,) * (ndim - 1) + (self.axis,), 'eager_sharding': False}

  def conv_options(self) -> dict:
    """Keyword arguments of `layers.Conv` for a conv split into the towers."""
    if self.axis is None:
      return {}
    return {'kernel_metadata': self._metadata(4), 'bias_metadata': self._metadata(1),
            'conv_general_dilated': functools.partial(_tower_conv, axis=self.axis),
            'bias_add': kernels.portable_bias_add}

  def linear_options(self) -> dict:
    """Keyword arguments of `layers.linear` for an FC layer split into the towers."""
    if self.axis is None:
      return {}
    return {'kernel_metadata': self._metadata(2), 'bias_metadata': self._metadata(1),
            'dot_general': _gathered_dot}

  def max_pool(self, x, kernel: int, stride: int):
    """`layers.max_pool` of tower-split `x`, each device pooling its own channels (`_per_tower`)."""
    pool = lambda t: layers.max_pool(t, kernel, stride)
    return pool(x) if self.axis is None else _per_tower(pool, x, self.axis)

  def towers(self, x):
    """`x` with its channels (last axis) split over the towers, one tower per device."""
    return x if self.axis is None else _place(x, self.axis)

  def gather(self, x):
    """`x` whole on every device: the towers exchange activations."""
    return x if self.axis is None else _place(x, None)


def _place(x, axis: str | None):
  """Pin the last (channel) axis of `x` to `axis` (None: every device); the batch axis stays."""
  return jax.lax.with_sharding_constraint(x, P(P.UNCONSTRAINED, *(None,) * (x.ndim - 2), axis))


def _gathered_dot(lhs, rhs, *args, **kwargs):
  """`kernels.dense_dot_general` of an FC layer whose units are split over the towers: each device
  computes its units from the whole (gathered) input."""
  return kernels.dense_dot_general(_place(lhs, None), rhs, *args, **kwargs)


def _per_tower(fn, x, axis: str):
  """`fn` (channel-wise, e.g. a pooling) on each device's tower channels of its share of the
  batch, with no communication: the oneDNN pooling's own split of the batch over every automatic
  axis would move the tower-split channels between devices."""
  batch = kernels.batch_axes(x.shape[0], exclude=(axis,))
  spec = P(batch or None, None, None, axis)
  return jax.shard_map(fn, in_specs=spec, out_specs=spec, axis_names={axis, *batch})(x)


def _tower_conv(lhs, rhs, *args, feature_group_count: int, axis: str, **kwargs):
  """`kernels.conv_general_dilated` for an NHWC/HWIO conv whose output channels are split over mesh
  `axis`: each device computes its own channels of its share of the batch (`jax.shard_map` over
  every mesh axis), with no communication. A grouped conv (conv2, conv4, conv5) convolves each
  tower's own input channels; an ungrouped one (conv1, conv3) all of them, which every device holds.

  XLA's SPMD partitioners (Shardy and GSPMD alike) all-gather the kernel of a channel-sharded
  grouped conv and recompute it on every device instead, and cannot split the oneDNN custom call
  at all, so the towers are made explicit here. The batch axes are manual here too: the kernel's
  own split of the batch would nest a second shard_map, whose transpose jax 0.10.2 cannot lower.
  """
  mesh = jax.sharding.get_abstract_mesh()
  batch = kernels.batch_axes(lhs.shape[0], exclude=(axis,))
  split = P(None, None, None, axis)
  lhs_spec = P(batch or None, None, None, axis if feature_group_count > 1 else None)
  out_spec = P(batch or None, None, None, axis)
  local = lambda x, w: kernels.conv_general_dilated(
      x, w, *args, feature_group_count=max(1, feature_group_count // mesh.shape[axis]), **kwargs)
  return jax.shard_map(local, in_specs=(lhs_spec, split), out_specs=out_spec,
                       axis_names={axis, *batch})(lhs, rhs)

_PAPER_2012 = 'Krizhevsky, Sutskever, Hinton 2012, ImageNet Classification with Deep CNNs'
_OWT = 'Krizhevsky 2014, One weird trick for parallelizing CNNs (arXiv 1404.5997)'
register('alexnet2012', AlexNet2012, family='alexnet', paper=_PAPER_2012, params=60_965_224,
         input_size=227, min_input_size=67, eval_resize=256, top1=59.3, top5=81.8,
         source='paper Table 2 (1 CNN: val top-1/top-5 error 40.7/18.2)',
         input_convention='raw_centred', eval_geometry='exact')
register('alexnet', AlexNet, family='alexnet', paper=_OWT, params=61_100_840, min_input_size=63,
         top1=56.522, top5=79.066, source='torchvision IMAGENET1K_V1',
         input_convention='torchvision', eval_geometry='torchvision')
register('bn_alexnet', AlexNet, kwargs={'batch_norm': True}, family='alexnet',
         paper=_OWT + ' + BatchNorm (imagenet-multiGPU.torch alexnetowtbn)', params=61_119_528,
         min_input_size=63, top1=56.60, source='szagoruyko/imagenet-validation.torch (1-crop)',
         input_convention='torch7_meanstd', eval_geometry='exact')
register('alexnet2012_tiny', AlexNet2012,
         kwargs={'channels': (16, 32, 48, 48, 32), 'fc_features': 64}, family='alexnet',
         paper=_PAPER_2012 + ' (narrow, for tests)', params=None, input_size=67, min_input_size=67,
         eval_resize=76, tiny=True, input_convention='raw_centred', eval_geometry='exact')
