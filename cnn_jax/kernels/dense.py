"""The dense layer's matmul, its kernel gradient computed in the kernel's own (in, out) layout and
dtype; in bfloat16 on CPU through oneDNN's matmul.

For `y = x @ w` JAX's reverse mode computes the kernel gradient as `dy^T @ x`, shape (out, in), and
transposes it. XLA folds that transpose into the matmul only when nothing stands between them; in
mixed precision (bfloat16 compute, float32 parameters) the casts of `w` do, and XLA:CPU then reads
the (out, in) gradient column by column inside the optimizer's update: for AlexNet's fc6 and fc7
that strided read costs more than all of its convolutions. Here the gradient is `x^T @ dy`, already
(in, out): the same values, a contiguous update. The kernel is cast to the compute dtype inside
(`promote_dtype` leaves it as stored), so that in mixed precision its gradient is accumulated
straight into float32, not rounded to bfloat16 and converted in another pass. `layers.linear` is
`nnx.Linear` with both.

XLA:CPU's bfloat16 matmuls of a batch of rows against a large kernel run at a quarter of oneDNN's
speed, slower than its own float32 (AlexNet's fc6 at batch 16, forward + backward: 98 ms against
23 ms, float32 58 ms; `python -m benchmarks.dense` on an AVX-512 EPYC). In bfloat16 the three
matmuls (x @ w, dy @ w^T, x^T @ dy) are therefore oneDNN's (an XLA FFI custom call of the library
`make kernels` builds, transposes read through strides), chosen by `lax.platform_dependent` as for
the convolutions (`conv.py`): XLA's dots on GPUs, in float32 (as fast as oneDNN's there), where
the library is not built or oneDNN has only its reference loops for bfloat16, and under a mesh
with automatic axes (where XLA's partitioner would gather the operands of an opaque call).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx.nn import dtypes as nnx_dtypes
from jax import lax

from cnn_jax.kernels import conv

_TARGET = 'cnn_jax_onednn_matmul'


@functools.cache
def _library():
  """The kernel library with the matmul target registered, or None."""
  return conv.register_targets({_TARGET: 'OnednnMatmul'})


@functools.cache
def supports(dtype) -> bool:
  """Whether the dense matmuls of `dtype` run through oneDNN on CPU (bfloat16, where oneDNN has
  kernels for it on this CPU)."""
  lib = _library()
  return (lib is not None and jnp.dtype(dtype) == jnp.bfloat16
          and bool(lib.OnednnMatmulSupports(1)))


def promote_dtype(args, /, *, dtype=None, inexact=True):
  """`nnx.Linear`'s `promote_dtype` of (inputs, kernel, bias), the kernel left as stored:
  `dot_general` casts it to the inputs' dtype itself, so that its gradient is accumulated into the
  kernel's own dtype (float32 parameters: never rounded to bfloat16 on the way)."""
  inputs, kernel, bias = args
  inputs, _, bias = nnx_dtypes.promote_dtype(args, dtype=dtype, inexact=inexact)
  return inputs, kernel, bias


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
  """`lax.dot_general` in `lhs`'s dtype, `rhs` cast to it (see `promote_dtype`); for a dense
  layer's `x @ w` (x's last axis against w's first, w of rank 2) with the gradient of `w`
  computed as `x^T @ dy` in w's own dtype."""
  (lhs_contract, rhs_contract), batch = dimension_numbers
  dense = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
           and batch == ((), ()) and rhs.ndim == 2 and out_sharding is None
           and preferred_element_type is None)
  if not dense:
    return lax.dot_general(lhs, rhs.astype(lhs.dtype), dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  return _matmul(lhs, rhs, precision)


def _xla_contract(a, b, a_axis: int, b_axis: int, precision, dtype):
  return lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())), precision=precision,
                         preferred_element_type=dtype)


def _onednn_contract(a, b, a_axis: int, b_axis: int, precision, dtype):
  """`_xla_contract` of 2-D `a` and `b` as one oneDNN matmul (`precision` is oneDNN's own)."""
  del precision
  axes = conv.varying(a) | conv.varying(b)
  out = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((a.shape[1 - a_axis], b.shape[1 - b_axis]),
                                                       dtype), vmap_method='sequential')(
      conv.vary(a, axes), conv.vary(b, axes), transpose_a=np.int64(a_axis == 0),
      transpose_b=np.int64(b_axis == 1), threads=np.int64(conv.threads()))
  return conv.vary(out, axes)


def _matmul_with(contract):
  """`x @ w` of 2-D `x` and `w` by `contract` in x's dtype, w cast to it; the gradient of `w`
  (of dtype `w_dtype`) computed as `x^T @ dy`, accumulated into the wider of x's and w's dtype."""
  def forward(x, w, precision, w_dtype):
    w_compute = w.astype(x.dtype)
    return contract(x, w_compute, 1, 0, precision, x.dtype), (x, w_compute)

  def backward(precision, w_dtype, residuals, dy):
    x, w_compute = residuals
    dy = dy.astype(x.dtype)
    dw = contract(x, dy, 0, 0, precision, jnp.promote_types(x.dtype, w_dtype))
    return contract(dy, w_compute, 1, 1, precision, x.dtype), dw.astype(w_dtype)

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
  def matmul(x, w, precision, w_dtype):
    return forward(x, w, precision, w_dtype)[0]

  matmul.defvjp(forward, backward)
  return matmul


_xla_matmul = _matmul_with(_xla_contract)
_onednn_matmul = _matmul_with(_onednn_contract)


def _matmul(x, w, precision):
  """`x @ w` (x of any rank, w 2-D), oneDNN's on CPU where it runs (see the module doc)."""
  y_shape = (*x.shape[:-1], w.shape[1])
  x = x.reshape(-1, x.shape[-1])
  options = {'precision': precision, 'w_dtype': jnp.dtype(w.dtype)}
  xla = functools.partial(_xla_matmul, **options)
  if (not supports(x.dtype) or jnp.dtype(w.dtype) not in (jnp.float32, jnp.bfloat16)
      or conv.auto_axes() or 0 in (*x.shape, *w.shape)):
    return xla(x, w).reshape(y_shape)
  return lax.platform_dependent(x, w, cpu=functools.partial(_onednn_matmul, **options),
                                default=xla).reshape(y_shape)
