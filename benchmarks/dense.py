"""Dense-layer speed on CPU: XLA's dot, `cnn_jax.kernels.dense_dot_general` (oneDNN's matmul in
bfloat16), and PyTorch.

  python -m benchmarks.dense --batch=16 --repeats=10

Forward + backward (input and kernel gradients of the sum of squares of the output) of the models'
large fully connected layers, x @ w with w of shape (in, out). Fastest wall time of `repeats`
interleaved calls (`benchmarks.conv_block.fastest`), freed memory kept (`cnn_jax.host_memory`) as
in training. PyTorch runs `torch.nn.functional.linear` with autograd on tensors of the same dtype,
with as many threads as the kernel uses. In float32 the kernels' path is XLA's dot too (its kernel
gradient computed in (in, out) layout). Prints a Markdown table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import conv_block
from cnn_jax import host_memory, kernels

_BATCH = flags.DEFINE_integer('batch', 16, 'Rows of x (the batch size).')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls per path (after one warm-up).')

# name: (in, out)
LAYERS = {
    'alexnet fc6': (9216, 4096),
    'alexnet fc7': (4096, 4096),
    'alexnet fc8': (4096, 1000),
    'vgg16 fc6': (25088, 4096),
}
_DIMS = (((1,), (0,)), ((), ()))


def jax_dense(dot_general, x, w):
  """One jitted forward + backward of `dot_general(x, w)`, as a blocking call."""
  loss = lambda x, w: jnp.sum(jnp.square(dot_general(x, w, _DIMS).astype(jnp.float32)))
  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(step(x, w))


def torch_dense(x, w, threads: int):
  """The same in eager PyTorch (None without torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(threads)
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[str(x.dtype)]
  tx = torch.from_numpy(np.array(x, np.float32)).to(dtype).requires_grad_()
  tw = torch.from_numpy(np.array(w, np.float32).T.copy()).to(dtype).requires_grad_()  # (out, in)

  def run():
    torch.nn.functional.linear(tx, tw).float().square().sum().backward()
    tx.grad = tw.grad = None
  return run


def main(_):
  host_memory.keep_freed_memory()  # as train.py: the gradients' buffers are reused, not faulted in
  print(f'oneDNN bfloat16 matmul: {"built" if kernels.dense_supports(jnp.bfloat16) else "off"}; '
        f'batch {_BATCH.value}; fastest of {_REPEATS.value}, forward + backward, ms\n')
  print('| layer | dtype | XLA dot | cnn_jax | torch | XLA / cnn_jax | torch / cnn_jax |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  rng = np.random.default_rng(0)
  for name, (fan_in, fan_out) in LAYERS.items():
    for dtype in (jnp.float32, jnp.bfloat16):
      x = jnp.asarray(rng.standard_normal((_BATCH.value, fan_in), np.float32), dtype)
      w = jnp.asarray(rng.standard_normal((fan_in, fan_out), np.float32) / fan_in ** 0.5, dtype)
      runs = {'xla': jax_dense(jax.lax.dot_general, x, w),
              'cnn_jax': jax_dense(kernels.dense_dot_general, x, w)}
      if (torch_run := torch_dense(x, w, kernels.threads())) is not None:
        runs['torch'] = torch_run
      best = {k: wall * 1e3 for k, (wall, _) in conv_block.fastest(runs, _REPEATS.value).items()}
      torch_ms, torch_ratio = ((f'{best["torch"]:.1f}', f'{best["torch"] / best["cnn_jax"]:.2f}')
                               if 'torch' in best else ('-', '-'))
      print(f'| {name} | {jnp.dtype(dtype).name} | {best["xla"]:.1f} | {best["cnn_jax"]:.1f} | '
            f'{torch_ms} | {best["xla"] / best["cnn_jax"]:.2f} | {torch_ratio} |')


if __name__ == '__main__':
  app.run(main)
