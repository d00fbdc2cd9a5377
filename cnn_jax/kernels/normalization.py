"""Training-mode BatchNorm (+ ReLU or ReLU6) with its backward written out: two passes each way.

JAX's reverse mode of the textbook formula (mean, then variance of x - mean, normalise, ReLU)
reads and writes each activation several times more than it must, and in bfloat16 casts it back
and forth between passes; on CPU these passes cost more than the convolutions around them. Here:

  forward   one pass for both sums (of x - k, k the first sample's per-channel mean: the shifted
            one-pass variance, accurate when k is near the mean), one pass that normalises,
            applies the activation and writes y;
  backward  one pass for sum(g) and sum(g * (x - mean)), g the output gradient masked where the
            activation is flat (read from y, so the pre-activation is never stored), one pass for
            dx = scale / sigma * (g - mean(g) - x_hat * mean(g * x_hat)) (Ioffe & Szegedy 2015, §3).

Statistics and arithmetic are float32 whatever the input dtype; y has `dtype`. Lowered for CPU
where the kernel library is built (`make kernels`), the four passes are the C++ loops of
`batch_norm.cc` (XLA:CPU's own fusions of these reductions run at a fraction of memory speed);
elsewhere, and for a `dtype` other than x's, they are `jnp` code. Either way the statistics are the
whole batch's: under a mesh each device sums its share and the sums are added across devices
(`psum`), as `jnp` reductions under `jit` over a sharded batch are (synchronised BatchNorm).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.kernels import conv

ACTIVATIONS = (None, 'relu', 'relu6')
_TARGETS = {'sums': 'BnSums', 'normalize': 'BnNormalize', 'backward_sums': 'BnBackwardSums',
            'backward_data': 'BnBackwardData'}


def activate(y, activation: str | None):
  """`y` through the activation (None, 'relu' or 'relu6')."""
  if activation == 'relu':
    return jnp.maximum(y, 0.0)
  if activation == 'relu6':
    return jnp.clip(y, 0.0, 6.0)
  return y


def _passes(g, y, activation):
  """`g` where the activation passes gradient (PyTorch's rule: relu where y > 0, relu6 where
  0 < y < 6)."""
  if activation is None:
    return g
  open_ = y > 0 if activation == 'relu' else (y > 0) & (y < 6)
  return jnp.where(open_, g, 0.0)


class _Ops(NamedTuple):
  """The four passes and the axes their sums are added over (module doc), on `jnp` arrays."""
  sums: callable           # (x, shift) -> [sum(x - shift), sum((x - shift)^2)]
  normalize: callable      # (x, r, mean, a, b) -> act((x - mean) * a + b [+ r]) in dtype
  backward_sums: callable  # (g, y, x, mean) -> [sum(g'), sum(g' * (x - mean))]
  backward_data: callable  # (g, y, x, mean, A, B, D, r) -> (g' * A + (x - mean) * B + D,
                           #                                g' if r is not None else None)
  axes: tuple[str, ...]    # mesh axes the batch is split over (sums are psum'ed over them)
  residual: bool = False   # whether a residual is added before the activation


def _jnp_ops(activation, dtype) -> _Ops:
  def rows(x):
    return x.astype(jnp.float32).reshape(-1, x.shape[-1])

  def sums(x, shift):
    centred = rows(x) - shift
    return jnp.stack([jnp.sum(centred, 0), jnp.sum(jnp.square(centred), 0)])

  def normalize(x, r, mean, a, b):
    y = (x.astype(jnp.float32) - mean) * a + b
    return activate(y if r is None else y + r.astype(jnp.float32), activation).astype(dtype)

  def backward_sums(g, y, x, mean):
    g = _passes(rows(g), rows(y), activation)
    return jnp.stack([jnp.sum(g, 0), jnp.sum(g * (rows(x) - mean), 0)])

  def backward_data(g, y, x, mean, a, b, d, r):
    g = _passes(g.astype(jnp.float32), y, activation)
    dx = (g * a + (x.astype(jnp.float32) - mean) * b + d).astype(x.dtype)
    return dx, None if r is None else g.astype(r.dtype)

  return _Ops(sums, normalize, backward_sums, backward_data, ())


@functools.cache
def _library():
  """The kernel library with the BatchNorm targets registered, or None."""
  return conv.register_targets({f'cnn_jax_batch_norm_{kind}': symbol
                                for kind, symbol in _TARGETS.items()})


def _kernel_takes(x) -> bool:
  """Whether the kernel library is built and its passes take `x` (a non-empty float32 or bfloat16
  array with features on its last axis)."""
  return (_library() is not None and x.dtype in (jnp.float32, jnp.bfloat16) and x.ndim >= 2
          and 0 not in x.shape)


def _kernel_ops(activation, axes) -> _Ops:
  code = np.int64(ACTIVATIONS.index(activation))
  threads = np.int64(conv.threads())

  def call(kind, out, *args, **attrs):
    result = jax.ffi.ffi_call(f'cnn_jax_batch_norm_{kind}', out, vmap_method='sequential')(
        *args, threads=threads, **attrs)
    # ffi_call's result is typed invariant in shard_map
    return jax.tree.map(lambda r: conv.vary(r, conv.varying(args[0])), result)

  def stats(x):
    return jax.ShapeDtypeStruct((2, x.shape[-1]), jnp.float32)

  def like(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype)

  def normalize(x, r, mean, a, b):
    r = jnp.zeros((0,), x.dtype) if r is None else r.astype(x.dtype)  # empty: no residual
    return call('normalize', like(x), x, r, mean, a, b, activation=code)

  def backward_data(g, y, x, mean, a, b, d, r):
    dr = like(x) if r is not None else jax.ShapeDtypeStruct((0,), x.dtype)
    dx, dr = call('backward_data', (like(x), dr), g, y, x, mean, a, b, d, activation=code)
    return dx, None if r is None else dr.astype(r.dtype)

  return _Ops(
      lambda x, shift: call('sums', stats(x), x, shift),
      normalize,
      lambda g, y, x, mean: call('backward_sums', stats(x), g, y, x, mean, activation=code),
      backward_data,
      axes)


def _total(sums, ops):
  return lax.psum(sums, ops.axes) if ops.axes else sums


def _count(x, ops):
  return x.size // x.shape[-1] * math.prod(lax.axis_size(a) for a in ops.axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def _batch_norm(ops, x, scale, bias, residual, epsilon):
  return _forward(ops, x, scale, bias, residual, epsilon)[0]


def _forward(ops, x, scale, bias, residual, epsilon):
  shift = jnp.mean(x[0].astype(jnp.float32).reshape(-1, x.shape[-1]), axis=0)
  if ops.axes:
    shift = lax.pmean(shift, ops.axes)  # one shift for every device's share
  sums = _total(ops.sums(x, shift), ops) / _count(x, ops)
  var = jnp.maximum(sums[1] - jnp.square(sums[0]), 0.0)
  mean = shift + sums[0]
  inv = lax.rsqrt(var + epsilon)
  y = ops.normalize(x, residual, mean, scale * inv, bias)
  return (y, mean, var), (x, y, mean, inv, scale)


def _backward(ops, epsilon, residuals, cotangents):
  del epsilon
  x, y, mean, inv, scale = residuals
  g = cotangents[0].astype(y.dtype)
  local = ops.backward_sums(g, y, x, mean)  # this device's [sum(g'), sum(g' * (x - mean))]
  total = _total(local, ops) / _count(x, ops)
  a = scale * inv
  dx, dr = ops.backward_data(g, y, x, mean, a, -a * jnp.square(inv) * total[1], -a * total[0],
                             y if ops.residual else None)
  # This device's share of d scale and d bias: shard_map sums them over the devices.
  return dx, local[1] * inv, local[0], dr


_batch_norm.defvjp(_forward, _backward)


def _local(ops, epsilon, x, scale, bias, *residual):
  """`_batch_norm` of this device's arrays (and the optional residual), all typed alike inside
  shard_map."""
  arrays = (x, scale, bias, *residual)
  axes = frozenset().union(*(conv.varying(v) for v in arrays))
  x, scale, bias, *residual = (conv.vary(v, axes) for v in arrays)
  ops = ops._replace(residual=bool(residual))
  return _batch_norm(ops, x, scale, bias, residual[0] if residual else None, epsilon)


def _cpu(activation, epsilon, x, scale, bias, *residual):
  """The kernel path; under a mesh each device normalises its share of the batch."""
  axes = conv.batch_axes(x.shape[0])
  if not axes:
    return _local(_kernel_ops(activation, ()), epsilon, x, scale, bias, *residual)
  batch, same = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
  return jax.shard_map(functools.partial(_local, _kernel_ops(activation, axes), epsilon),
                       in_specs=(batch, same, same, *[batch] * len(residual)),
                       out_specs=(batch, same, same),
                       axis_names=set(axes))(x, scale, bias, *residual)


def _arguments(x, scale, bias, residual, activation, dtype):
  """dtype, the float32 scale and bias, and () or (the residual in dtype,)."""
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
  dtype = jnp.dtype(dtype or x.dtype)
  if residual is not None and residual.shape != x.shape:
    raise ValueError(f'residual of shape {residual.shape} does not match x of shape {x.shape}')
  return (dtype, scale.astype(jnp.float32), bias.astype(jnp.float32),
          () if residual is None else (residual.astype(dtype),))


def portable_batch_norm(x, scale, bias, *, epsilon: float, activation: str | None = None,
                        residual=None, dtype=None):
  """`batch_norm` in `jnp` code only: its path on GPUs and wherever the kernels are not built."""
  dtype, scale, bias, residual = _arguments(x, scale, bias, residual, activation, dtype)
  y, mean, var = _portable(activation, epsilon, dtype, x, scale, bias, *residual)
  return y, lax.stop_gradient(mean), lax.stop_gradient(var)


def batch_norm(x, scale, bias, *, epsilon: float, activation: str | None = None, residual=None,
               dtype=None):
  """BatchNorm of `x` (features on its last axis) with its batch statistics, plus `residual` (an
  array like x, or None), then `activation` (None, 'relu' or 'relu6'). Returns (y, mean, var): y
  of `dtype` (default x's), the batch's float32 mean and biased variance (no gradient flows
  through them)."""
  dtype, scale, bias, residual = _arguments(x, scale, bias, residual, activation, dtype)
  portable = functools.partial(_portable, activation, epsilon, dtype)
  if dtype != x.dtype or not _kernel_takes(x):
    y, mean, var = portable(x, scale, bias, *residual)
  else:
    y, mean, var = lax.platform_dependent(
        x, scale, bias, *residual, cpu=functools.partial(_cpu, activation, epsilon),
        default=portable)
  return y, lax.stop_gradient(mean), lax.stop_gradient(var)


def _portable(activation, epsilon, dtype, x, scale, bias, *residual):
  return _local(_jnp_ops(activation, dtype), epsilon, x, scale, bias, *residual)


def portable_channel_sums(x):
  """float32 sums of `x` over all axes but the last (`jnp.sum`)."""
  return jnp.sum(x.astype(jnp.float32).reshape(-1, x.shape[-1]), axis=0)


def _cpu_sums(x):
  """The kernel's first sum (shift 0); under a mesh each device sums its share, then psum."""
  axes = conv.batch_axes(x.shape[0])
  ops = _kernel_ops(None, axes)

  def local(x):
    zero = conv.vary(jnp.zeros((x.shape[-1],), jnp.float32), conv.varying(x))
    return _total(ops.sums(x, zero)[0], ops)
  if not axes:
    return local(x)
  return jax.shard_map(local, in_specs=jax.sharding.PartitionSpec(axes),
                       out_specs=jax.sharding.PartitionSpec(), axis_names=set(axes))(x)


def channel_sums(x):
  """float32 sums of `x` over all axes but the last (features): BatchNorm's sum pass on CPU where
  the kernel library is built, `jnp.sum` elsewhere; the whole batch's under a mesh."""
  if not _kernel_takes(x):
    return portable_channel_sums(x)
  return lax.platform_dependent(x, cpu=_cpu_sums, default=portable_channel_sums)
