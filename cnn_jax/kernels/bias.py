"""A layer's bias add whose gradient, the output gradient summed per feature, is summed in float32:
in one pass of `normalization.channel_sums` (the kernel library's on CPU), or with `jnp.sum`.

XLA:CPU lowers the gradient of a convolution's broadcast bias, a reduction of the (N, H, W, C)
output gradient to C values, to loops far below memory speed: in a bfloat16 VGG-16 step the 13
bias gradients cost more than the convolutions they follow. In bfloat16 its running sums are
bfloat16 too. `layers.Conv` adds its bias here.
"""

from __future__ import annotations

import jax

from cnn_jax.kernels import normalization


def _add(x, bias):
  return x + bias.astype(x.dtype)


def _bias_add(sums):
  """`x + bias` (bias of shape (features,), cast to x's dtype, broadcast over x's other axes)
  whose bias gradient is `sums(dy)` (float32) cast to the bias's dtype."""
  add = jax.custom_vjp(_add)
  add.defvjp(lambda x, bias: (_add(x, bias), bias),
             lambda bias, dy: (dy, sums(dy).astype(bias.dtype)))
  return add


bias_add = _bias_add(normalization.channel_sums)
"""`x + bias`; the bias gradient is one pass of `normalization.channel_sums`."""
portable_bias_add = _bias_add(normalization.portable_channel_sums)
"""`x + bias`; the bias gradient is `jnp.sum` in float32 (for features split over devices, where
the kernel's batch split would move them)."""
