"""Convolution speed on CPU: XLA's convolution, oneDNN's through `cnn_jax.kernels`, and PyTorch.

  python -m benchmarks.conv_block --batch=16 --size=56 --channels=64 --repeats=5

The block is four chained 3x3 stride-1 'SAME' convolutions (no bias, nothing between them) on a
batch x size x size x channels NHWC input, run forward and backward (gradients of every kernel and
of the input, so each convolution runs forward, backward-data and backward-weights). GFLOP/s counts
2 * N * H * W * C_in * C_out * 9 multiply-adds per convolution and pass, three passes. Each path is
timed `repeats` times after a warm-up, the paths taking turns; the table reports the fastest
wall time and the least CPU time of the process (steadier when the machine is shared).
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

_DEPTH = 4


def block_flops(batch: int, size: int, channels: int) -> float:
  """Forward + backward-data + backward-weights FLOPs of the block."""
  return 3 * _DEPTH * 2 * batch * size * size * channels * channels * 9


def fastest(runs: dict, repeats: int) -> dict:
  """Per run: the fastest wall time and the least process CPU time (all threads) of `repeats`
  calls, interleaved so that every path sees the same machine load (after one warm-up call each).
  On a shared machine the CPU time is the steadier measure of the work a path does."""
  for run in runs.values():
    run()
  best = {name: (float('inf'), float('inf')) for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      wall, cpu = time.perf_counter(), time.process_time()
      run()
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
  return best


def jax_block(conv, x, kernels_):
  """One jitted forward + backward of the block with `conv`, as a blocking call."""
  def loss(x, ws):
    for w in ws:
      x = conv(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jnp.square(x.astype(jnp.float32))) / 2  # needs the last output too

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(step(x, kernels_))


def torch_block(x, kernels_, threads: int):
  """One forward + backward of the block in eager PyTorch, on its GPU where it has one (None
  without torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(threads)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[str(x.dtype)]
  channels_last = lambda a, perm: (torch.from_numpy(np.array(a, np.float32)).permute(*perm)
                                   .to(device, dtype).contiguous(memory_format=torch.channels_last)
                                   .requires_grad_())
  tx = channels_last(x, (0, 3, 1, 2))
  tws = [channels_last(w, (3, 2, 0, 1)) for w in kernels_]

  def run():
    y = tx
    for w in tws:
      y = torch.nn.functional.conv2d(y, w, padding=1)
    (y.float().square().sum() / 2).backward()
    if device == 'cuda':
      torch.cuda.synchronize()

  return run


def table(batch: int, size: int, channels: int, repeats: int, dtypes) -> list[str]:
  """The Markdown table's lines: XLA's convolution, `cnn_jax.kernels` (oneDNN on CPU, XLA's on a
  GPU) and PyTorch, per dtype."""
  flops = block_flops(batch, size, channels)
  lines = ['| dtype | path | GFLOP/s (fastest) | GFLOP per CPU-second | speed vs XLA |',
           '| --- | --- | --- | --- | --- |']
  keys = jax.random.split(jax.random.key(0), _DEPTH + 1)
  for name in dtypes:
    dtype = jnp.dtype(name)
    x = jax.random.normal(keys[0], (batch, size, size, channels), dtype)
    ws = [(jax.random.normal(k, (3, 3, channels, channels)) / np.sqrt(9 * channels)).astype(dtype)
          for k in keys[1:]]
    runs = {'XLA': jax_block(lax.conv_general_dilated, x, ws)}
    if kernels.supports(dtype):
      runs['oneDNN kernel'] = jax_block(kernels.conv_general_dilated, x, ws)
    if (torch_run := torch_block(x, ws, kernels.threads())) is not None:
      runs['PyTorch'] = torch_run
    best = fastest(runs, repeats)
    for path, (wall, cpu) in best.items():
      lines.append(f'| {name} | {path} | {flops / wall / 1e9:.0f} | {flops / cpu / 1e9:.0f} '
                   f'| {best["XLA"][0] / wall:.1f}x |')
  return lines


def main(argv):
  del argv
  if kernels.unavailable_reason():
    raise SystemExit(kernels.unavailable_reason())
  batch, size, channels, repeats = (FLAGS.batch, FLAGS.size, FLAGS.channels, FLAGS.repeats)
  print(f'Block: {_DEPTH} x conv3x3, {batch}x{size}x{size}x{channels}, forward + backward '
        f'({block_flops(batch, size, channels) / 1e9:.1f} GFLOP); {kernels.threads()} thread(s); '
        f'fastest of {repeats}.\n')
  print('\n'.join(table(batch, size, channels, repeats, FLAGS.dtypes)))


if __name__ == '__main__':
  # Defined only when run as a script: benchmarks/train_step.py imports this module.
  flags.DEFINE_integer('batch', 16, 'Batch size.')
  flags.DEFINE_integer('size', 56, 'Height and width.')
  flags.DEFINE_integer('channels', 64, 'Input and output channels of every convolution.')
  flags.DEFINE_integer('repeats', 5, 'Timed runs per path (after one warm-up).')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'float32 and/or bfloat16.')
  FLAGS = flags.FLAGS
  app.run(main)
