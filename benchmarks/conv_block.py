"""Convolution speed on CPU: XLA's convolution, oneDNN's through `cnn_jax.kernels`, and PyTorch.

  python -m benchmarks.conv_block --batch=16 --size=56 --channels=64 --repeats=5

The block is four chained 3x3 stride-1 'SAME' convolutions (no bias, nothing between them) on a
batch x size x size x channels NHWC input, run forward and backward (gradients of every kernel and
of the input, so each convolution runs forward, backward-data and backward-weights). GFLOP/s counts
2 * N * H * W * C_in * C_out * 9 multiply-adds per convolution and pass, three passes. Each path is
timed `repeats` times after a warm-up; the table reports the fastest (the machine may be shared).
PyTorch runs `torch.nn.functional.conv2d` on channels-last tensors with autograd, with as many
threads as the kernel uses. Prints a Markdown table for float32 and bfloat16.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from cnn_jax import kernels

_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size.')
_SIZE = flags.DEFINE_integer('size', 56, 'Height and width.')
_CHANNELS = flags.DEFINE_integer('channels', 64, 'Input and output channels of every convolution.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per path (after one warm-up).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'float32 and/or bfloat16.')
_DEPTH = 4


def block_flops(batch: int, size: int, channels: int) -> float:
  """Forward + backward-data + backward-weights FLOPs of the block."""
  return 3 * _DEPTH * 2 * batch * size * size * channels * channels * 9


def best_seconds(run, repeats: int) -> float:
  """Fastest of `repeats` timed calls of `run` (after one untimed warm-up call)."""
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return min(times)


def time_jax(conv, x, kernels_, repeats: int) -> float:
  """Seconds of one jitted forward + backward of the block with `conv`."""
  def loss(x, ws):
    for w in ws:
      x = conv(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(x.astype(jnp.float32))

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return best_seconds(lambda: jax.block_until_ready(step(x, kernels_)), repeats)


def time_torch(x, kernels_, repeats: int, threads: int) -> float | None:
  """Seconds of one eager forward + backward of the block in PyTorch (None without torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(threads)
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[str(x.dtype)]
  tx = torch.from_numpy(np.array(x, np.float32)).permute(0, 3, 1, 2).to(dtype)
  tx = tx.contiguous(memory_format=torch.channels_last).requires_grad_()
  tws = [torch.from_numpy(np.array(w, np.float32)).permute(3, 2, 0, 1).to(dtype)
         .contiguous(memory_format=torch.channels_last).requires_grad_() for w in kernels_]

  def run():
    y = tx
    for w in tws:
      y = torch.nn.functional.conv2d(y, w, padding=1)
    y.float().sum().backward()

  return best_seconds(run, repeats)


def main(argv):
  del argv
  if kernels.unavailable_reason():
    raise SystemExit(kernels.unavailable_reason())
  batch, size, channels, repeats = _BATCH.value, _SIZE.value, _CHANNELS.value, _REPEATS.value
  flops = block_flops(batch, size, channels)
  threads = kernels.threads()
  print(f'Block: {_DEPTH} x conv3x3, {batch}x{size}x{size}x{channels}, forward + backward '
        f'({flops / 1e9:.1f} GFLOP); {threads} thread(s); fastest of {repeats}.\n')
  print('| dtype | XLA GFLOP/s | oneDNN kernel GFLOP/s | PyTorch GFLOP/s | kernel / XLA |')
  print('| --- | --- | --- | --- | --- |')
  keys = jax.random.split(jax.random.key(0), _DEPTH + 1)
  for name in _DTYPES.value:
    dtype = jnp.dtype(name)
    x = jax.random.normal(keys[0], (batch, size, size, channels), dtype)
    ws = [(jax.random.normal(k, (3, 3, channels, channels)) / np.sqrt(9 * channels)).astype(dtype)
          for k in keys[1:]]
    xla = time_jax(lax.conv_general_dilated, x, ws, repeats)
    ours = time_jax(kernels.conv_general_dilated, x, ws, repeats) if kernels.supports(dtype) else None
    torch_s = time_torch(x, ws, repeats, threads)
    rate = lambda s: '-' if s is None else f'{flops / s / 1e9:.0f}'
    ratio = '-' if ours is None else f'{xla / ours:.1f}x'
    print(f'| {name} | {rate(xla)} | {rate(ours)} | {rate(torch_s)} | {ratio} |')


if __name__ == '__main__':
  app.run(main)
