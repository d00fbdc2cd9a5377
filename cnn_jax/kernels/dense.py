"""The dense layer's matmul, its kernel gradient computed in the kernel's own (in, out) layout.

For `y = x @ w` JAX's reverse mode computes the kernel gradient as `dy^T @ x`, shape (out, in), and
transposes it. XLA folds that transpose into the matmul only when nothing stands between them; in
mixed precision (bfloat16 compute, float32 parameters) the casts of `w` do, and XLA:CPU then reads
the (out, in) gradient column by column inside the optimizer's update: for AlexNet's fc6 and fc7
that strided read costs more than all of its convolutions. Here the gradient is `x^T @ dy`, already
(in, out): the same values, a contiguous update. `layers.linear` is `nnx.Linear` with it.
"""

from __future__ import annotations

import functools

import jax
from jax import lax


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
  """`lax.dot_general`; for a dense layer's `x @ w` (x's last axis against w's first, w of rank 2)
  with the gradient of `w` computed as `x^T @ dy`."""
  (lhs_contract, rhs_contract), batch = dimension_numbers
  dense = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
           and batch == ((), ()) and rhs.ndim == 2 and out_sharding is None
           and preferred_element_type is None)
  if not dense:
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  return _matmul(lhs, rhs, precision)


def _contract(a, b, a_axis: int, b_axis: int, precision):
  return lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x, w, precision):
  return _contract(x, w, x.ndim - 1, 0, precision)


def _matmul_fwd(x, w, precision):
  return _matmul(x, w, precision), (x, w)


def _matmul_bwd(precision, residuals, dy):
  x, w = residuals
  dx = _contract(dy, w, dy.ndim - 1, 1, precision)
  dw = _contract(x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]), 0, 0, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)
