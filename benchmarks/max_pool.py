"""Max pooling speed on CPU: XLA's reduce_window, oneDNN's through `cnn_jax.kernels`, and PyTorch.

  python -m benchmarks.max_pool --batch=16 --repeats=5

Forward + backward (the input gradient of the sum of squares of the output) of the models'
poolings: ResNet's 3x3 stride 2 stem pool, GoogLeNet's ceil-mode 3x3 stride 2 pools and its
3x3 stride 1 branch pool, VGG's 2x2 stride 2. Fastest wall time of `repeats` interleaved calls
(`benchmarks.conv_block.fastest`). PyTorch runs `torch.nn.functional.max_pool2d` on channels-last
tensors with autograd, with as many threads as the kernel uses. Prints a Markdown table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import conv_block
from cnn_jax import kernels
from cnn_jax.kernels import pool
from cnn_jax.models import layers

_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per path (after one warm-up).')

# name: (H = W, channels, torch.nn.MaxPool2d's kernel, stride, padding, ceil_mode)
POOLS = {
    'resnet stem 3x3/2 p1': (112, 64, 3, 2, 1, False),
    'googlenet 3x3/2 ceil': (56, 192, 3, 2, 0, True),
    'googlenet branch 3x3/1 p1': (28, 256, 3, 1, 1, True),
    'vgg 2x2/2': (112, 128, 2, 2, 0, False),
}


def jax_pool(pool, x, args):
  """One jitted forward + backward of `pool(x, *args)`, as a blocking call."""
  step = jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(pool(x, *args).astype(jnp.float32)))))
  return lambda: jax.block_until_ready(step(x))


def torch_pool(x, args, threads: int):
  """The same in eager PyTorch (None without torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(threads)
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[str(x.dtype)]
  tx = (torch.from_numpy(np.array(x, np.float32)).permute(0, 3, 1, 2).to(dtype)
        .contiguous(memory_format=torch.channels_last).requires_grad_())
  kernel, stride, padding, ceil_mode = args

  def run():
    y = torch.nn.functional.max_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode)
    y.float().square().sum().backward()
    tx.grad = None
  return run


def xla_max_pool(x, kernel, stride, padding, ceil_mode):
  """`layers.max_pool`'s windows through XLA's reduce_window (the path without the kernels)."""
  y = layers.max_pool(x, kernel, stride, padding, ceil_mode)
  high = [(out - 1) * stride + kernel - size - padding
          for out, size in zip(y.shape[1:3], x.shape[1:3])]
  assert min(high) >= 0, 'no cropping in these shapes'
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1),
                               (1, stride, stride, 1),
                               ((0, 0), *[(padding, h) for h in high], (0, 0)))


def main(_):
  print(f'oneDNN pooling: {pool.unavailable_reason() or "built"}; batch {_BATCH.value}; '
        f'fastest of {_REPEATS.value}, forward + backward, ms\n')
  print('| pooling | dtype | XLA | oneDNN | torch | XLA / oneDNN |')
  print('| --- | --- | ---: | ---: | ---: | ---: |')
  rng = np.random.default_rng(0)
  for name, (size, channels, *args) in POOLS.items():
    for dtype in (jnp.float32, jnp.bfloat16):
      x = jnp.asarray(rng.standard_normal((_BATCH.value, size, size, channels), np.float32), dtype)
      runs = {'xla': jax_pool(xla_max_pool, x, args), 'onednn': jax_pool(layers.max_pool, x, args)}
      torch_run = torch_pool(x, args, kernels.threads())
      if torch_run is not None:
        runs['torch'] = torch_run
      best = {k: wall * 1e3 for k, (wall, _) in conv_block.fastest(runs, _REPEATS.value).items()}
      torch_ms = f'{best["torch"]:.1f}' if 'torch' in best else '-'
      print(f'| {name} | {jnp.dtype(dtype).name} | {best["xla"]:.1f} | {best["onednn"]:.1f} | '
            f'{torch_ms} | {best["xla"] / best["onednn"]:.1f} |')


if __name__ == '__main__':
  app.run(main)
