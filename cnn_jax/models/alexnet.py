"""AlexNet: the 2012 two-tower network, torchvision's single-tower variant, and BN-AlexNet.

- Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
  Networks", §3 and Fig. 2. The two GPUs are `feature_group_count=2` on conv2, conv4 and conv5;
  LRN (§3.3) within each tower; overlapping max-pool 3/2 (§3.4); dropout 0.5 after fc6 and fc7
  (§4.2); init N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere (§5).
  The paper says 224x224 input, but its arithmetic needs 227 (as in Caffe's bvlc_alexnet).
- torchvision `alexnet`: the "One weird trick" layout (Krizhevsky 2014, arXiv 1404.5997),
  64-192-384-256-256, conv1 padding 2, no LRN, dropout before fc6 and fc7.
- BN-AlexNet: the same layout with BatchNorm (eps 1e-3) after every conv and hidden FC layer and no
  dropout, as soumith/imagenet-multiGPU.torch `alexnetowtbn` (the network Canziani et al. used).

Model parallelism (`AlexNet2012(tower_axis='model')`, issue #6): the paper's two-GPU split (§3.2)
as a sharding of the same network over a mesh axis of size `groups`. Every kernel and bias is
sharded over that axis on its output dimension (conv1..conv5 channels, fc6..fc8 units), so each
device holds one tower and half of each FC layer; activations are pinned to that layout, and
gathered only at conv3's input and at the inputs of fc6, fc7, fc8 and the logits, where the
paper's GPUs communicate. Parameters are identical to the unsplit network's, so checkpoints move
freely between the two.

All three end the feature extractor with an adaptive average pool to 6x6 (identity at the default
resolution), as torchvision does, so that smaller images still fit the 9216-wide fc6.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from cnn_jax import kernels
from cnn_jax.models import layers
from cnn_jax.models.registry import register

_normal_001 = nnx.initializers.normal(0.01)
_ones = nnx.initializers.ones
_zeros = nnx.initializers.zeros


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
  batch = tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
                if name != axis and kind == jax.sharding.AxisType.Auto and mesh.shape[name] > 1)
  if lhs.shape[0] % math.prod(mesh.shape[name] for name in batch):
    batch = ()
  split = P(None, None, None, axis)
  lhs_spec = P(batch or None, None, None, axis if feature_group_count > 1 else None)
  out_spec = P(batch or None, None, None, axis)
  local = lambda x, w: kernels.conv_general_dilated(
      x, w, *args, feature_group_count=max(1, feature_group_count // mesh.shape[axis]), **kwargs)
  return jax.shard_map(local, in_specs=(lhs_spec, split), out_specs=out_spec,
                       axis_names={axis, *batch})(lhs, rhs)


class AlexNet2012(nnx.Module):
  """The 2012 network as one graph: each grouped conv holds both towers' kernels.

  `groups=2` gives the paper's two towers; conv1 and conv3 see the whole input as in Fig. 2 (conv3
  is where the towers exchange activations; the FC layers are the other place). `tower_axis` names
  a mesh axis of size `groups` to place one tower per device (see the module docstring); the model
  must then be traced under `jax.set_mesh(mesh)`.
  """

  name = 'alexnet2012'
  min_input_size = 67

  def __init__(
      self, num_classes: int = 1000, *, channels: Sequence[int] = (96, 256, 384, 384, 256),
      fc_features: int = 4096, groups: int = 2, dropout: float = 0.5, lrn: bool = True,
      tower_axis: str | None = None, dtype=None, rngs: nnx.Rngs,
  ):
    c1, c2, c3, c4, c5 = channels
    if tower_axis is not None:
      uneven = {n: c for n, c in zip(('conv1', 'conv3', 'fc6/fc7', 'fc8'),
                                     (c1, c3, fc_features, num_classes)) if c % groups}
      if uneven:
        raise ValueError(f'tower_axis={tower_axis!r} splits every layer into {groups} towers, but '
                         f'{uneven} output widths are not divisible by {groups}; use even widths '
                         'or tower_axis=None')
    def sharded(ndim):  # metadata: output axis (last) over the tower axis; placed by the caller
      if tower_axis is None:
        return {}
      return {'out_sharding': (None,) * (ndim - 1) + (tower_axis,), 'eager_sharding': False}
    def conv(cin, cout, k, stride=1, padding=0, groups=1, bias=0.0):
      towers = {'conv_general_dilated': functools.partial(_tower_conv, axis=tower_axis)}
      return layers.conv(cin, cout, (k, k), stride, padding=layers.pad(padding),
                         feature_group_count=groups, kernel_init=_normal_001,
                         bias_init=nnx.initializers.constant(bias), kernel_metadata=sharded(4),
                         bias_metadata=sharded(1), dtype=dtype, rngs=rngs,
                         **(towers if tower_axis else {}))
    def fc(cin, cout, bias=0.0):
      return nnx.Linear(cin, cout, kernel_init=_normal_001,
                        bias_init=nnx.initializers.constant(bias), kernel_metadata=sharded(2),
                        bias_metadata=sharded(1), dtype=dtype, rngs=rngs)
    self.groups = groups
    self.tower_axis = tower_axis
    self.lrn = lrn
    self.conv1 = conv(3, c1, 11, stride=4)
    self.conv2 = conv(c1, c2, 5, padding=2, groups=groups, bias=1.0)
    self.conv3 = conv(c2, c3, 3, padding=1)
    self.conv4 = conv(c3, c4, 3, padding=1, groups=groups, bias=1.0)
    self.conv5 = conv(c4, c5, 3, padding=1, groups=groups, bias=1.0)
    self.fc6 = fc(6 * 6 * c5, fc_features, bias=1.0)
    self.fc7 = fc(fc_features, fc_features, bias=1.0)
    self.fc8 = fc(fc_features, num_classes)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def _lrn(self, x):
    return layers.local_response_norm(x, groups=self.groups) if self.lrn else x

  def _check_mesh(self):
    """With `tower_axis`: fail clearly unless the current mesh has one device per tower."""
    mesh = jax.sharding.get_abstract_mesh()
    if self.tower_axis not in mesh.axis_names or mesh.shape[self.tower_axis] != self.groups:
      raise ValueError(
          f'{self.name}(tower_axis={self.tower_axis!r}) needs a mesh with a {self.tower_axis!r} '
          f'axis of size {self.groups}, one device per tower, but the current mesh is '
          f'{dict(mesh.shape)}; trace it under `with jax.set_mesh(mesh):`, or build the model '
          'with tower_axis=None')

  def _place(self, x, split: bool):
    """With `tower_axis`: pin the last (channel) axis of `x` to one tower per device (`split`) or
    to every device (a gather: the towers exchange activations); the batch axis stays as it is."""
    if self.tower_axis is None:
      return x
    self._check_mesh()
    spec = P(P.UNCONSTRAINED, *(None,) * (x.ndim - 2), self.tower_axis if split else None)
    return jax.lax.with_sharding_constraint(x, spec)

  def towers(self, x):
    """conv1..pool2: up to here each tower only sees its own channels (after conv1)."""
    layers.check_input_size(self.name, x, self.min_input_size)
    if self.tower_axis is not None:
      self._check_mesh()
    x = self._place(nnx.relu(self.conv1(x)), split=True)
    x = layers.max_pool(self._lrn(x), 3, 2)
    x = self._place(nnx.relu(self.conv2(x)), split=True)
    return layers.max_pool(self._lrn(x), 3, 2)

  def features(self, x):
    """conv1..pool5, (N, H, W, 3) -> (N, 6, 6, C5)."""
    x = self._place(self.towers(x), split=False)  # conv3 sees both towers
    x = self._place(nnx.relu(self.conv3(x)), split=True)
    x = self._place(nnx.relu(self.conv4(x)), split=True)
    x = layers.max_pool(self._place(nnx.relu(self.conv5(x)), split=True), 3, 2)
    return layers.adaptive_avg_pool(x, 6)

  def classifier(self, x, *, train: bool = False):
    """fc6..fc8 on flattened features; dropout after the ReLU of fc6 and fc7 (paper §4.2). With
    `tower_axis`, each device computes half of each layer's units from all of its inputs."""
    for fc in (self.fc6, self.fc7):
      x = self._place(nnx.relu(fc(self._place(x, split=False))), split=True)
      x = self.dropout(x, deterministic=not train)
    x = self._place(self.fc8(self._place(x, split=False)), split=True)
    return self._place(x, split=False)  # the logits, gathered for the softmax

  def __call__(self, x, *, train: bool = False):
    x = self.features(x)
    # Flatten in PyTorch's (C, H, W) order so that torchvision/caffe fc6 weights map directly.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    return self.classifier(x, train=train).astype(jnp.float32)


class AlexNet(nnx.Module):
  """torchvision's AlexNet (and, with `batch_norm=True`, BN-AlexNet)."""

  min_input_size = 63

  def __init__(
      self, num_classes: int = 1000, *, channels: Sequence[int] = (64, 192, 384, 256, 256),
      fc_features: int = 4096, dropout: float = 0.5, batch_norm: bool = False, dtype=None,
      rngs: nnx.Rngs,
  ):
    self.name = 'bn_alexnet' if batch_norm else 'alexnet'
    cins = (3, *channels[:-1])
    specs = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))  # kernel, stride, padding
    self.convs = nnx.List([
        layers.conv(cin, cout, (k, k), s, padding=layers.pad(p),
                    kernel_init=layers.torch_default_kernel_init,
                    bias_init=layers.torch_default_bias_init(cin * k * k), dtype=dtype, rngs=rngs)
        for cin, cout, (k, s, p) in zip(cins, channels, specs)])
    fc_in = (6 * 6 * channels[-1], fc_features, fc_features)
    fc_out = (fc_features, fc_features, num_classes)
    self.fcs = nnx.List([
        nnx.Linear(i, o, kernel_init=layers.torch_default_kernel_init,
                   bias_init=layers.torch_default_bias_init(i), dtype=dtype, rngs=rngs)
        for i, o in zip(fc_in, fc_out)])
    self.batch_norm = batch_norm
    if batch_norm:
      bn = lambda n: layers.batch_norm(n, eps=1e-3, dtype=dtype, rngs=rngs)
      self.conv_bns = nnx.List([bn(c) for c in channels])
      self.fc_bns = nnx.List([bn(fc_features), bn(fc_features)])
    self.dropout = nnx.Dropout(0.0 if batch_norm else dropout, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    layers.check_input_size(self.name, x, self.min_input_size)
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.batch_norm:
        x = self.conv_bns[i](x, use_running_average=not train)
      x = nnx.relu(x)
      if i in (0, 1, 4):
        x = layers.max_pool(x, 3, 2)
    x = layers.adaptive_avg_pool(x, 6)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for i, fc in enumerate(self.fcs[:2]):
      x = fc(self.dropout(x, deterministic=not train))  # torchvision: dropout *before* fc6, fc7
      if self.batch_norm:
        x = self.fc_bns[i](x, use_running_average=not train)
      x = nnx.relu(x)
    return self.fcs[2](x).astype(jnp.float32)


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
