"""`lax.conv_general_dilated` with oneDNN's convolutions on CPU (XLA FFI custom calls).

`conv_general_dilated` takes `lax.conv_general_dilated`'s arguments (it is what `nnx.Conv` calls
through its `conv_general_dilated` argument). A 2-D NHWC x HWIO -> NHWC convolution in float32 or
bfloat16 runs through oneDNN's forward, backward-data and backward-weights primitives joined by
`jax.custom_vjp`, chosen by `lax.platform_dependent` when the program is lowered: a program lowered
or exported for a GPU holds only XLA's convolution. Any other convolution (input dilation, batch
groups, other layouts or dtypes), and every convolution when the library is not built
(`make kernels`), is XLA's.

Under a mesh (`jax.set_mesh`) each device convolves its share of the batch. Limits of the oneDNN
path: first derivatives only (reverse mode, no `jax.jvp` or second derivatives), `vmap` loops over
the mapped axis, and `jax.export` for CPU needs `DisabledSafetyCheck.custom_call` for its targets.
"""
import ctypes
import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LIBRARY = os.path.join(os.path.dirname(__file__), 'libonednn_conv.so')
_TARGETS = {'forward': 'OnednnConvForward', 'backward_data': 'OnednnConvBackwardData',
            'backward_weights': 'OnednnConvBackwardWeights'}
_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


@functools.cache
def _library():
  """The loaded kernel library with its FFI targets registered, or the reason it is unusable."""
  if not os.path.exists(LIBRARY):
    return None, f'{LIBRARY} is not built: run `make kernels`'
  try:
    lib = ctypes.CDLL(LIBRARY)
  except OSError as error:
    return None, f'{LIBRARY} does not load ({error}): run `make kernels`'
  for kind, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f'cnn_jax_onednn_conv_{kind}',
                                jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return lib, None


def unavailable_reason():
  """Why the oneDNN path is off (None when the library is built and loads)."""
  return _library()[1]


def register_targets(targets: dict[str, str]):
  """The kernel library with `targets` (FFI target name -> exported handler symbol) registered
  for CPU, or None where it is not built or was built before those handlers (`make kernels`)."""
  if unavailable_reason() is not None:
    return None
  lib = ctypes.CDLL(LIBRARY)
  if not all(hasattr(lib, symbol) for symbol in targets.values()):
    return None
  for name, symbol in targets.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return lib


@functools.cache
def supports(dtype) -> bool:
  """Whether the oneDNN path runs convolutions of `dtype` (float32, or bfloat16 where oneDNN
  has kernels for it on this CPU)."""
  lib, _ = _library()
  dtype = jnp.dtype(dtype)
  if lib is None or dtype not in (jnp.float32, jnp.bfloat16):
    return False
  return bool(lib.OnednnConvSupports(int(dtype == jnp.bfloat16)))


def threads() -> int:
  """oneDNN's threads per call: this process's cores shared by its CPU devices."""
  try:
    devices = jax.local_device_count('cpu')
  except RuntimeError:  # no CPU backend (e.g. JAX_PLATFORMS=cuda): nothing runs this path
    devices = 1
  return max(1, len(os.sched_getaffinity(0)) // devices)


class _Spec(NamedTuple):
  strides: tuple[int, int]
  padding_lo: tuple[int, int]
  padding_hi: tuple[int, int]
  dilation: tuple[int, int]
  groups: int
  threads: int

  def call(self, kind, a, b, shape, dtype):
    out = jax.ffi.ffi_call(f'cnn_jax_onednn_conv_{kind}', jax.ShapeDtypeStruct(shape, dtype),
                           vmap_method='sequential')(
        a, b, strides=np.array(self.strides, np.int64),
        padding_lo=np.array(self.padding_lo, np.int64),
        padding_hi=np.array(self.padding_hi, np.int64),
        dilation=np.array(self.dilation, np.int64), groups=np.int64(self.groups),
        threads=np.int64(self.threads))
    return vary(out, varying(a))  # ffi_call's result is typed invariant in shard_map

  def out_shape(self, lhs_shape, rhs_shape):
    spatial = tuple((size + lo + hi - (k - 1) * d - 1) // s + 1 for size, k, s, lo, hi, d in zip(
        lhs_shape[1:3], rhs_shape[:2], self.strides, self.padding_lo, self.padding_hi,
        self.dilation))
    return (lhs_shape[0], *spatial, rhs_shape[3])


def varying(x) -> frozenset:
  """The manual mesh axes `x` varies over (inside `jax.shard_map`; empty elsewhere)."""
  return jax.typeof(x).manual_axis_type.varying


def vary(x, axes):
  """`x` typed as varying over `axes` too (`lax.pcast`; its transpose sums over them)."""
  missing = tuple(sorted(axes - varying(x)))
  return lax.pcast(x, missing, to='varying') if missing else x


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _onednn_conv(spec, lhs, rhs):
  return spec.call('forward', lhs, rhs, spec.out_shape(lhs.shape, rhs.shape), lhs.dtype)


def _onednn_conv_fwd(spec, lhs, rhs):
  return _onednn_conv(spec, lhs, rhs), (lhs, rhs)


def _onednn_conv_bwd(spec, residuals, cotangent):
  lhs, rhs = residuals
  cotangent = cotangent.astype(lhs.dtype)
  return (spec.call('backward_data', cotangent, rhs, lhs.shape, lhs.dtype),
          spec.call('backward_weights', lhs, cotangent, rhs.shape, rhs.dtype))


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def _local_conv(spec, lhs, rhs):
  """The oneDNN convolution of this device's arrays."""
  axes = varying(lhs) | varying(rhs)
  return _onednn_conv(spec, vary(lhs, axes), vary(rhs, axes))


def batch_axes(batch_size: int, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
  """The current mesh's automatic axes of size > 1 (less `exclude`) that split a batch of
  `batch_size` evenly, or () where there are none or they do not divide it."""
  mesh = jax.sharding.get_abstract_mesh()
  axes = tuple(name for name in auto_axes() if name not in exclude)
  return () if batch_size % math.prod(mesh.shape[name] for name in axes) else axes


def auto_axes() -> tuple[str, ...]:
  """The current mesh's automatic axes of size > 1 (none outside a mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  return () if mesh.empty else tuple(
      name for name, kind in zip(mesh.axis_names, mesh.axis_types)
      if kind == jax.sharding.AxisType.Auto and mesh.shape[name] > 1)


def split_batch(local, x, *replicated):
  """`local(x, *replicated)` (a oneDNN call of this device's arrays); under a mesh
  (`jax.set_mesh`) each device runs it on its share of the batch of `x` over the mesh's automatic
  axes (`jax.shard_map`): XLA's partitioner would otherwise gather the batch and repeat an opaque
  custom call on every device. The gradient of `replicated` is summed over those axes."""
  axes = batch_axes(x.shape[0])
  if not axes:
    return local(x, *replicated)
  batch = jax.sharding.PartitionSpec(axes)
  return jax.shard_map(local, in_specs=(batch, *[jax.sharding.PartitionSpec()] * len(replicated)),
                       out_specs=batch, axis_names=set(axes))(x, *replicated)


def _cpu_conv(spec, lhs, rhs):
  """The oneDNN path, split over the batch under a mesh."""
  return split_batch(functools.partial(_local_conv, spec), lhs, rhs)


def _spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, preferred_element_type, out_sharding):
  """The oneDNN call for these arguments, or None where XLA's convolution is the path."""
  if (lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != rhs.dtype or not supports(lhs.dtype)
      or batch_group_count != 1 or out_sharding is not None
      or (preferred_element_type is not None and jnp.dtype(preferred_element_type) != lhs.dtype)
      or any(d != 1 for d in (lhs_dilation or (1, 1)))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
      or 0 in lhs.shape or 0 in rhs.shape):
    return None
  strides = tuple(window_strides)
  dilation = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding)
  if any(p < 0 for pair in padding for p in pair):
    return None
  spec = _Spec(strides, tuple(lo for lo, _ in padding), tuple(hi for _, hi in padding), dilation,
               feature_group_count, threads())
  return spec if all(d > 0 for d in spec.out_shape(lhs.shape, rhs.shape)) else None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, out_sharding=None):
  """`lax.conv_general_dilated`, through oneDNN when lowered for CPU (see the module doc)."""
  xla_conv = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type,
      out_sharding=out_sharding)
  spec = _spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count, preferred_element_type, out_sharding)
  if spec is None:
    return xla_conv(lhs, rhs)
  return lax.platform_dependent(lhs, rhs, cpu=functools.partial(_cpu_conv, spec),
                                default=xla_conv)
