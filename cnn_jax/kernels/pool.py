"""2-D max and average pooling (`lax.reduce_window`) with oneDNN's pooling on CPU.

`avg_pool` (a window's sum over its size, PyTorch's count_include_pad) runs through oneDNN's
average pooling forward and backward the same way as what follows; its values may differ from
XLA's summation order by a rounding.

`max_pool(x, window, strides, padding)` is `lax.reduce_window(x, -inf, lax.max, ...)` over H and W
of an NHWC array. In float32 or bfloat16 it runs through oneDNN's max pooling (XLA FFI custom
calls of the library `make kernels` builds): the forward pass writes each output's argmax within
its window (oneDNN's workspace, the residual of `jax.custom_vjp`), the backward pass adds each
output's gradient to that cell. It is chosen by `lax.platform_dependent` when the program is
lowered: a program lowered or exported for a GPU holds only XLA's pooling, and so does every call
where the library is not built. Under a mesh each device pools its share of the batch.

Ties: of equal maxima in a window the first in row-major order (top row first, then left to
right) takes the gradient, as in PyTorch's `max_pool2d`. XLA's gradient (select-and-scatter)
picks the same cell. Values equal XLA's, NaN and -inf included (oneDNN skips NaN and pools a
window of only -inf to the lowest finite number: the forward kernel then recomputes the output as
XLA's; which NaN or -inf cell takes the gradient is left to oneDNN). Limits as for
`conv.conv_general_dilated`: first derivatives only, `vmap` loops over the mapped axis.
"""
import ctypes
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.kernels import conv

_TARGETS = {'max_pool_forward': 'OnednnMaxPoolForward',
            'max_pool_backward': 'OnednnMaxPoolBackward',
            'avg_pool_forward': 'OnednnAvgPoolForward',
            'avg_pool_backward': 'OnednnAvgPoolBackward'}


@functools.cache
def _library():
  """The kernel library with the pooling targets registered, or the reason it is unusable."""
  lib = conv.register_targets({f'cnn_jax_onednn_{kind}': symbol
                               for kind, symbol in _TARGETS.items()})
  if lib is None:
    return None, (conv.unavailable_reason()
                  or f'{conv.LIBRARY} has no pooling (built before it): run `make kernels`')
  lib.OnednnMaxPoolWorkspaceBytes.restype = ctypes.c_int64
  lib.OnednnMaxPoolWorkspaceBytes.argtypes = (ctypes.c_int, ctypes.c_int64)
  return lib, None


def unavailable_reason():
  """Why the oneDNN max pooling is off (None when the library is built with it and loads)."""
  return _library()[1]


@functools.cache
def _workspace_dtype(dtype, window_size: int):
  """The dtype of oneDNN's workspace (one argmax per output), or None where oneDNN has no max
  pooling of `dtype` over `window_size` cells on this CPU."""
  lib, _ = _library()
  dtype = jnp.dtype(dtype)
  if lib is None or dtype not in (jnp.float32, jnp.bfloat16):
    return None
  size = lib.OnednnMaxPoolWorkspaceBytes(int(dtype == jnp.bfloat16), window_size)
  return {1: np.dtype(np.uint8), 4: np.dtype(np.int32)}.get(size)


class _Spec(NamedTuple):
  shape: tuple[int, ...]  # this device's NHWC input
  dtype: np.dtype
  window: tuple[int, int]
  strides: tuple[int, int]
  padding_lo: tuple[int, int]
  padding_hi: tuple[int, int]
  workspace: np.dtype | None  # max pooling's argmax dtype; None for average pooling
  threads: int

  def out_shape(self):
    return (self.shape[0], *((size + lo + hi - k) // s + 1 for size, k, s, lo, hi in zip(
        self.shape[1:3], self.window, self.strides, self.padding_lo, self.padding_hi)),
            self.shape[3])

  def call(self, kind, args, results):
    return jax.ffi.ffi_call(f'cnn_jax_onednn_{kind}', results, vmap_method='sequential')(
        *args, window=np.array(self.window, np.int64), strides=np.array(self.strides, np.int64),
        padding_lo=np.array(self.padding_lo, np.int64),
        padding_hi=np.array(self.padding_hi, np.int64), threads=np.int64(self.threads))


def _forward(spec, x):
  """The pooled array and oneDNN's workspace (typed as varying like `x` inside `shard_map`)."""
  shape = spec.out_shape()
  y, workspace = spec.call('max_pool_forward', (x,), (jax.ShapeDtypeStruct(shape, spec.dtype),
                                              jax.ShapeDtypeStruct(shape, spec.workspace)))
  axes = conv.varying(x)
  return conv.vary(y, axes), conv.vary(workspace, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _onednn_max_pool(spec, x):
  return _forward(spec, x)[0]


def _onednn_max_pool_fwd(spec, x):
  return _forward(spec, x)


def _onednn_max_pool_bwd(spec, workspace, cotangent):
  grad = spec.call('max_pool_backward', (cotangent.astype(spec.dtype), workspace),
                   jax.ShapeDtypeStruct(spec.shape, spec.dtype))
  return (conv.vary(grad, conv.varying(cotangent) | conv.varying(workspace)),)


_onednn_max_pool.defvjp(_onednn_max_pool_fwd, _onednn_max_pool_bwd)


def _local_spec(window, strides, padding, workspace, x) -> _Spec:
  """The oneDNN call pooling this device's `x` (`workspace`: None for average pooling)."""
  return _Spec(x.shape, np.dtype(x.dtype), window, strides, tuple(lo for lo, _ in padding),
               tuple(hi for _, hi in padding), workspace, conv.threads())


def _onednn_fits(x, window, strides, padding) -> bool:
  """Whether oneDNN pools this NHWC `x`: 2-D windows, padding in [0, window) (oneDNN takes no
  wider padding), every window inside the padded input, no empty axis."""
  return (x.ndim == 4 and len(window) == len(strides) == len(padding) == 2 and 0 not in x.shape
          and all(0 <= p < k for pair, k in zip(padding, window) for p in pair)
          and all(size + lo + hi >= k for size, (lo, hi), k in zip(x.shape[1:3], padding, window)))


def _local_pool(window, strides, padding, workspace, x):
  """oneDNN's max pooling of this device's `x`."""
  return _onednn_max_pool(_local_spec(window, strides, padding, workspace, x), x)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`lax.reduce_window(x, -inf, lax.max, (1, *window, 1), (1, *strides, 1),
  ((0, 0), *padding, (0, 0)))` of NHWC `x`, through oneDNN when lowered for CPU (module doc)."""
  window, strides = tuple(window), tuple(strides)
  padding = tuple(tuple(pair) for pair in padding)
  xla_pool = functools.partial(lax.reduce_window, init_value=-jnp.inf, computation=lax.max,
                               window_dimensions=(1, *window, 1), window_strides=(1, *strides, 1),
                               padding=((0, 0), *padding, (0, 0)))
  fits = _onednn_fits(x, window, strides, padding)
  workspace = _workspace_dtype(x.dtype, window[0] * window[1]) if fits else None
  if workspace is None:
    return xla_pool(x)
  local = functools.partial(_local_pool, window, strides, padding, workspace)
  return lax.platform_dependent(x, cpu=functools.partial(conv.split_batch, local),
                                default=xla_pool)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _onednn_avg_pool(spec, x):
  y = spec.call('avg_pool_forward', (x,), jax.ShapeDtypeStruct(spec.out_shape(), spec.dtype))
  return conv.vary(y, conv.varying(x))


def _onednn_avg_pool_fwd(spec, x):
  return _onednn_avg_pool(spec, x), None


def _onednn_avg_pool_bwd(spec, _, cotangent):
  grad = spec.call('avg_pool_backward', (cotangent.astype(spec.dtype),),
                   jax.ShapeDtypeStruct(spec.shape, spec.dtype))
  return (conv.vary(grad, conv.varying(cotangent)),)


_onednn_avg_pool.defvjp(_onednn_avg_pool_fwd, _onednn_avg_pool_bwd)


def _local_avg_pool(window, strides, padding, x):
  """oneDNN's average pooling of this device's `x`."""
  return _onednn_avg_pool(_local_spec(window, strides, padding, None, x), x)


@functools.cache
def _avg_supported(dtype) -> bool:
  lib, _ = _library()
  dtype = jnp.dtype(dtype)
  return (lib is not None and dtype in (jnp.float32, jnp.bfloat16)
          and bool(lib.OnednnAvgPoolSupports(int(dtype == jnp.bfloat16))))


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The sum of each window of NHWC `x` over H and W, zero-padded by `padding`, divided by the
  window's size (`torch.nn.AvgPool2d` with count_include_pad): oneDNN's average pooling when
  lowered for CPU, XLA's reduce_window sum elsewhere. Each window must lie inside the padded
  input."""
  window, strides = tuple(window), tuple(strides)
  padding = tuple(tuple(pair) for pair in padding)

  def xla_pool(x):
    summed = lax.reduce_window(x, 0.0, lax.add, (1, *window, 1), (1, *strides, 1),
                               ((0, 0), *padding, (0, 0)))
    return summed / (window[0] * window[1])

  if not (_avg_supported(x.dtype) and _onednn_fits(x, window, strides, padding)):
    return xla_pool(x)
  local = functools.partial(_local_avg_pool, window, strides, padding)
  return lax.platform_dependent(x, cpu=functools.partial(conv.split_batch, local),
                                default=xla_pool)
