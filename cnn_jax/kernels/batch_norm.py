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

Statistics and arithmetic are float32 whatever the input dtype; y has `dtype`. The sums are plain
`jnp` reductions, so under `jit` over a batch sharded across devices they are global (synchronised
BatchNorm), and the same program runs on any platform.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from cnn_jax.kernels.conv import vary, varying

ACTIVATIONS = (None, 'relu', 'relu6')


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


def _axes(x):
  return tuple(range(x.ndim - 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _batch_norm(x, scale, bias, epsilon, activation, dtype):
  return _forward(x, scale, bias, epsilon, activation, dtype)[0]


def _forward(x, scale, bias, epsilon, activation, dtype):
  xf = x.astype(jnp.float32)
  count = x.size // x.shape[-1]
  shift = jnp.mean(xf[0].reshape(-1, x.shape[-1]), axis=0)
  centred = xf - shift
  mean_shifted = jnp.sum(centred, _axes(x)) / count
  var = jnp.maximum(jnp.sum(jnp.square(centred), _axes(x)) / count - jnp.square(mean_shifted), 0.0)
  mean = shift + mean_shifted
  inv = jax.lax.rsqrt(var + epsilon)
  y = activate((xf - mean) * (scale * inv) + bias, activation).astype(dtype)
  return (y, mean, var), (x, y, mean, inv, scale)


def _backward(epsilon, activation, dtype, residuals, cotangents):
  del epsilon, dtype
  x, y, mean, inv, scale = residuals
  count = x.size // x.shape[-1]
  g = _passes(cotangents[0].astype(jnp.float32), y, activation)
  centred = x.astype(jnp.float32) - mean
  sum_g = jnp.sum(g, _axes(x))
  sum_g_centred = jnp.sum(g * centred, _axes(x))
  dx = (scale * inv) * (g - sum_g / count - centred * (jnp.square(inv) * sum_g_centred / count))
  return dx.astype(x.dtype), (sum_g_centred * inv).astype(scale.dtype), sum_g.astype(scale.dtype)


_batch_norm.defvjp(_forward, _backward)


def batch_norm(x, scale, bias, *, epsilon: float, activation: str | None = None, dtype=None):
  """BatchNorm of `x` (features on its last axis) with its batch statistics, then `activation`
  (None, 'relu' or 'relu6'). Returns (y, mean, var): y of `dtype` (default x's), the batch's
  float32 mean and biased variance (no gradient flows through them)."""
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
  dtype = jnp.dtype(dtype or x.dtype)
  axes = varying(x) | varying(scale) | varying(bias)  # inside shard_map: one type for all three
  scale, bias = (vary(v.astype(jnp.float32), axes) for v in (scale, bias))
  y, mean, var = _batch_norm(vary(x, axes), scale, bias, epsilon, activation, dtype)
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
