"""Layers shared by the model families, written to match the papers and PyTorch exactly.

Everything is NHWC. Padding is always explicit: `pad(p)` gives PyTorch's symmetric padding,
never XLA's 'SAME', which pads a stride-2 3x3 layer on an even size n by (0, 1): its total padding
(n/2 - 1) * 2 + 3 - n = 1 goes to the high side, where PyTorch pads (1, 1).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

from cnn_jax import kernels

Dtype = Any

class Conv(nnx.Conv):
  """`nnx.Conv` (the same variables and initialisation) of NHWC images whose convolution is
  `cnn_jax.kernels.conv_general_dilated` (oneDNN's on CPU where the kernel library is built, XLA's
  on GPU and everywhere else) and whose bias is added by `cnn_jax.kernels.bias_add` (its gradient
  summed in float32 in one pass). Every model builds its convs here; `conv_general_dilated` and
  `bias_add` replace those two (AlexNet's towers do)."""

  def __init__(self, *args, conv_general_dilated=kernels.conv_general_dilated,
               bias_add=kernels.bias_add, **kwargs):
    super().__init__(*args, conv_general_dilated=conv_general_dilated, **kwargs)
    self.bias_add = bias_add

  def __call__(self, x):
    padding = canonicalize_padding(self.padding, len(self.kernel_size))
    if (x.ndim != 4 or self.mask is not None or self.input_dilation not in (None, 1)
        or padding in ('CIRCULAR', 'REFLECT', 'CAUSAL')):
      raise ValueError('layers.Conv takes NHWC images and zero padding, without a mask or input '
                       'dilation; use nnx.Conv for the rest')
    x, kernel = self.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
    y = self.conv_general_dilated(
        x, kernel, _pair(self.strides), padding, rhs_dilation=_pair(self.kernel_dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=self.feature_group_count,
        precision=self.precision)
    return y if self.bias is None else self.bias_add(y, self.bias[...])


def _pair(v) -> tuple[int, int]:
  return (1, 1) if v is None else (v, v) if isinstance(v, int) else tuple(v)


linear = functools.partial(nnx.Linear, dot_general=kernels.dense_dot_general,
                           promote_dtype=kernels.dense_promote_dtype)
"""`nnx.Linear` whose kernel gradient comes out in the kernel's layout and dtype
(`cnn_jax.kernels.dense`): a contiguous optimizer update in mixed precision, its float32 gradient
never rounded to bfloat16; oneDNN's matmuls in bfloat16 on CPU. Every model builds its dense layers
here."""


def pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch `padding=p` for a 2-D conv or pool: p on both sides of H and W."""
  return ((p, p), (p, p))


def _torch_pool_padding(
    x: jax.Array, kernel: int, stride: int, padding: int, ceil_mode: bool
) -> tuple[jax.Array, list[tuple[int, int]]]:
  """`x` and the (low, high) padding of H and W for which windows of `kernel` at `stride` give
  PyTorch's output size (incl. `ceil_mode`)."""
  pads = []
  for size in x.shape[1:3]:
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if out < 1:  # with ceil_mode PyTorch (and Caffe) keep one window that overhangs a small input
      raise ValueError(f'pooling window {kernel} does not fit input of size {size} (padding {padding})')
    if ceil_mode and (out - 1) * stride >= size + padding:
      out -= 1  # PyTorch drops a last window that would start inside the right padding.
    high = (out - 1) * stride + kernel - size - padding
    pads.append((padding, high))
  # Rows/columns no window reaches are cropped rather than negatively padded: this keeps
  # reduce_window differentiable under jit, and the oneDNN pooling takes no negative padding.
  x = x[:, :x.shape[1] + min(pads[0][1], 0), :x.shape[2] + min(pads[1][1], 0)]
  return x, [(lo, max(hi, 0)) for lo, hi in pads]


def _pool_window(
    x: jax.Array, init: float, op, kernel: int, stride: int, padding: int, ceil_mode: bool
) -> jax.Array:
  """reduce_window over H and W with PyTorch's output-size rule (incl. `ceil_mode`)."""
  x, pads = _torch_pool_padding(x, kernel, stride, padding, ceil_mode)
  # `init` stays a Python scalar: a monoid reduce_window is differentiable under jit.
  return jax.lax.reduce_window(
      x, init, op, (1, kernel, kernel, 1), (1, stride, stride, 1),
      ((0, 0), pads[0], pads[1], (0, 0)))


def max_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False):
  """`torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=...)`: padded cells are -inf.

  Through `cnn_jax.kernels.max_pool`: oneDNN's pooling on CPU where the kernel library is built,
  XLA's reduce_window elsewhere; each window's gradient goes to its first maximum in row-major
  order, as in PyTorch."""
  x, pads = _torch_pool_padding(x, kernel, stride, padding, ceil_mode)
  return kernels.max_pool(x, (kernel, kernel), (stride, stride), pads)


def avg_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False):
  """`torch.nn.AvgPool2d(kernel, stride, padding)` with count_include_pad=True.

  With `ceil_mode`, PyTorch excludes the cells beyond the right padding from the divisor; so do we.
  Without it, through `cnn_jax.kernels.avg_pool` (oneDNN's on CPU where the library is built).
  """
  if not ceil_mode:
    x, pads = _torch_pool_padding(x, kernel, stride, padding, ceil_mode)
    return kernels.avg_pool(x, (kernel, kernel), (stride, stride), pads)
  summed = _pool_window(x, 0.0, jax.lax.add, kernel, stride, padding, ceil_mode)
  ones = jnp.ones((1, x.shape[1] + 2 * padding, x.shape[2] + 2 * padding, 1), x.dtype)
  counts = _pool_window(ones, 0.0, jax.lax.add, kernel, stride, 0, True)
  return summed / counts


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
  """`torch.nn.AdaptiveAvgPool2d`: bin i spans [floor(i*H/out), ceil((i+1)*H/out))."""
  out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
  h, w = x.shape[1:3]
  if (h, w) == (out_h, out_w):
    return x
  if out_h == out_w == 1:
    return jnp.mean(x, axis=(1, 2), keepdims=True)

  def bins(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

  rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bins(h, out_h)]
  x = jnp.stack(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2) for a, b in bins(w, out_w)]
  return jnp.stack(cols, axis=2)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over H and W: (N, H, W, C) -> (N, C)."""
  return jnp.mean(x, axis=(1, 2))


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
    groups: int = 1,
) -> jax.Array:
  """Krizhevsky et al. 2012, §3.3: b = a / (k + alpha * sum_{n neighbours} a^2) ** beta.

  The sum runs over `size` adjacent channels centred on each channel, clipped at the edges, and
  within each of `groups` channel groups (each GPU of the 2012 network normalised its own half).
  Note alpha is *not* divided by `size` (torch.nn.LocalResponseNorm divides it).
  """
  n, h, w, c = x.shape
  squares = jnp.square(x.astype(jnp.float32)).reshape(n, h, w, groups, c // groups)
  half = size // 2
  sums = jax.lax.reduce_window(
      squares, 0.0, jax.lax.add, (1, 1, 1, 1, size), (1, 1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
  scale = (k + alpha * sums.reshape(n, h, w, c)) ** -beta
  return (x * scale).astype(x.dtype)


def check_input_size(model_name: str, x: jax.Array, min_size: int) -> None:
  """Raise a clear error when the image is too small for the network (at trace time)."""
  if x.ndim != 4:
    raise ValueError(f'{model_name} expects NHWC images of rank 4, got shape {x.shape}')
  if min(x.shape[1:3]) < min_size:
    raise ValueError(
        f'{model_name} needs inputs of at least {min_size}x{min_size} pixels, got '
        f'{x.shape[1]}x{x.shape[2]} (input shape {x.shape}). Resize the images or choose a '
        f'larger image size in the config.')


class ConvBN(nnx.Module):
  """Conv (no bias) -> BatchNorm -> ReLU: torchvision's `BasicConv2d` and the ResNet/VGG-BN unit."""

  def __init__(
      self, in_ch: int, out_ch: int, kernel: int | Sequence[int], stride: int = 1,
      padding: int | Sequence[int] = 0, *, eps: float = 1e-5, relu: bool = True,
      scale_init=nnx.initializers.ones, kernel_init=None, dtype: Dtype = None,
      rngs: nnx.Rngs,
  ):
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    self.conv = Conv(
        in_ch, out_ch, kernel, stride, padding=((ph, ph), (pw, pw)), use_bias=False,
        kernel_init=kernel_init or kaiming_normal_fan_out, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_ch, eps=eps, scale_init=scale_init, dtype=dtype, rngs=rngs)
    self.relu = relu

  def __call__(self, x, *, train: bool = False):
    return self.bn(self.conv(x), use_running_average=not train,
                   activation='relu' if self.relu else None)


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` (the same variables) with PyTorch's statistics and a fused activation.

  `bn(x, use_running_average=..., activation=None | 'relu' | 'relu6', residual=None)`: the
  activation of BN(x) + residual (ResNet's shortcut, added before its ReLU). In training the batch is
  normalised by `cnn_jax.kernels.batch_norm` (float32 statistics, normalisation and activation in
  one pass, a two-pass backward) and the running variance is updated with the unbiased batch
  variance, n / (n - 1) times the biased one, as in Ioffe & Szegedy 2015 (Algorithm 2, step 10)
  and `torch.nn.BatchNorm2d`. Normalisation is float32 in every mode; the output has `dtype`.
  """

  def __call__(self, x, use_running_average: bool | None = None, *, activation: str | None = None,
               residual=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average is None:
      raise ValueError('BatchNorm needs use_running_average: pass it to the call or constructor')
    ones = jnp.ones((x.shape[-1],), jnp.float32)
    scale = ones if self.scale is None else self.scale[...]
    bias = jnp.zeros_like(ones) if self.bias is None else self.bias[...]
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    x = x.astype(self.dtype) if self.dtype else x
    if use_running_average:
      mul = jax.lax.rsqrt(self.var[...] + self.epsilon) * scale
      y = (x.astype(jnp.float32) - self.mean[...]) * mul + bias
      if residual is not None:
        y = y + residual.astype(dtype).astype(jnp.float32)
      return kernels.activate(y, activation).astype(dtype)
    y, mean, var = kernels.batch_norm(x, scale, bias, epsilon=self.epsilon, activation=activation,
                                      residual=residual, dtype=dtype)
    count = x.size // x.shape[-1]
    self.mean[...] = self.momentum * self.mean[...] + (1 - self.momentum) * mean
    self.var[...] = (self.momentum * self.var[...]
                     + (1 - self.momentum) * var * (count / max(count - 1, 1)))
    return y


def batch_norm(features: int, *, eps: float = 1e-5, dtype: Dtype = None, rngs: nnx.Rngs,
               **kwargs) -> BatchNorm:
  """`BatchNorm` with PyTorch's defaults: momentum 0.1 in PyTorch = 0.9 in Flax, eps 1e-5.

  Under jit over a batch sharded across devices the statistics are global (synchronised BN).
  """
  return BatchNorm(features, momentum=0.9, epsilon=eps, dtype=dtype, rngs=rngs, **kwargs)


# Initialisers used by several families.
kaiming_normal_fan_out = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
"""torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu') for VGG/ResNet convs."""


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's default Conv/Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  fan_in = math.prod(shape[:-1])
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias_init(fan_in: int):
  """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return functools.partial(_uniform, bound=bound)


def _uniform(key, shape, dtype=jnp.float32, *, bound):
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def trunc_normal(std: float):
  """torch.nn.init.trunc_normal_(std=std, a=-2, b=2) as torchvision's GoogLeNet/Inception use."""
  return nnx.initializers.truncated_normal(stddev=std, lower=-2.0 / std, upper=2.0 / std)
