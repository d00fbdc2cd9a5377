"""AlexNet 2012 split over 'model' (the paper's two GPUs) against unsplit data parallelism: step time
and the compiled train step's collectives, per ('data' x 'model') mesh.

  python -m benchmarks.alexnet_split [--model=alexnet2012 --image_size=227 --batch=32 --steps=3]
      [--meshes=1x1,2x1,1x2,8x1,4x2]

Runs `cnn_jax.trainer`'s own train step for `configs/alexnet.py` (split=2 where 'model' = 2) on
synthetic data. Without accelerators it forces 8 host CPU devices (set before jax is imported);
those share the machine's cores, so on a CPU the table shows the split's overhead, not a speed-up.
For each mesh: compile time, step time, images/s, and the collectives of the compiled step per mesh
axis (instructions / MB of their results per step). Prints a Markdown table.
"""

from __future__ import annotations

import os

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_force_host_platform_device_count=8')

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import importlib.util
import math
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from cnn_jax import parallel, trainer

_MODEL = flags.DEFINE_string('model', 'alexnet2012', 'alexnet2012 or alexnet2012_tiny.')
_SIZE = flags.DEFINE_integer('image_size', 227, 'Input resolution.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps (after one warm-up step).')
_MESHES = flags.DEFINE_list('meshes', ['1x1', '2x1', '1x2', '8x1', '4x2'],
                            'data x model mesh shapes; model 2 = the split.')


def recipe(split: bool):
  path = Path(__file__).resolve().parents[1] / 'configs' / 'alexnet.py'
  spec = importlib.util.spec_from_file_location('alexnet_recipe', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('split=2' if split else None)


def run(data: int, model: int) -> dict[str, object]:
  """Compile and time the train step on a data x model mesh; count its collectives."""
  c = recipe(split=model == 2)
  c.model.name = _MODEL.value
  c.image_size, c.batch_size, c.num_classes = _SIZE.value, _BATCH.value, 1000
  c.mesh_shape = {'data': data, 'model': model}
  # The step runs on random images: the embedded digits only stand in for ImageNet's splits.
  c.data.name, c.data.train_split, c.data.eval_split = 'digits', 'train', 'test'
  mesh = parallel.make_mesh(c.mesh_shape, devices=jax.devices()[:data * model])
  step = trainer.train_step_fn(c, mesh)
  state, acc = step.init(), step.new_acc()
  rng = np.random.default_rng(0)
  batch = parallel.global_batch({
      'image': rng.standard_normal((c.batch_size, c.image_size, c.image_size, 3), np.float32),
      'label': rng.integers(0, 1000, c.batch_size).astype(np.int32),
      'mask': np.ones(c.batch_size, bool)}, mesh)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    step = step.fn.lower(*step.args).compile()
  compile_s = time.perf_counter() - t0
  state, acc = step(state, acc, batch)
  jax.block_until_ready(acc)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, acc = step(state, acc, batch)
  jax.block_until_ready(acc)
  step_s = (time.perf_counter() - t0) / _STEPS.value
  ops, volume = collections.Counter(), collections.Counter()
  for op in parallel.collectives(step.as_text(), mesh):
    ops[op.axes] += 1
    volume[op.axes] += sum(4 * math.prod(s) for s in op.shapes) / 2**20  # float32 results
  return {'mesh': f'{data}x{model}', 'compile_s': compile_s, 'step_s': step_s,
          'images_per_s': c.batch_size / step_s, 'ops': ops, 'volume': volume}


def main(argv):
  del argv
  print(f'{_MODEL.value} at {_SIZE.value} px, batch {_BATCH.value}, {jax.device_count()} '
        f'{jax.devices()[0].platform} devices; mean of {_STEPS.value} steps after one warm-up.\n')
  print('| data x model | compile s | step ms | images/s | collectives over model (ops / MB) '
        '| over data (ops / MB) |')
  print('|---|---|---|---|---|---|')
  for text in _MESHES.value:
    data, model = (int(n) for n in text.split('x'))
    r = run(data, model)
    cell = lambda axis: f"{r['ops'][axis]} / {r['volume'][axis]:.2f}"
    print(f"| {r['mesh']} | {r['compile_s']:.1f} | {1000 * r['step_s']:.1f} | "
          f"{r['images_per_s']:.1f} | {cell('model')} | {cell('data')} |", flush=True)


if __name__ == '__main__':
  app.run(main)
