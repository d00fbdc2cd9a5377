"""Where a training step's time goes, jax against PyTorch: op time by kind on the same step.

  python -m benchmarks.profile_step --model=resnet50 --precision=bf16 [--batch=16 --steps=3]

jax: a `jax.profiler` trace of the trainer's compiled step (`benchmarks.train_step.jax_step`),
each XLA op's time summed by kind: the oneDNN convolutions and poolings and the BatchNorm passes
(FFI custom calls: max and average pooling in one row), dots (the dense layers: oneDNN's matmul
in bf16, else XLA's dots, also inside its YNNPACK fusions), reduce-windows (XLA splits a large
sum, such as a conv bias's gradient or a BatchNorm statistic, into them), and every other op (the
fusions XLA makes of BatchNorm, ReLU, casts, ...) by
phase — forward, backward, or the update after the gradient (optimizer, metrics) — read from the
op's `op_name` metadata. torch: `torch.profiler`'s self CPU time of each aten op of the same eager
step (`benchmarks.train_step.torch_step`), grouped likewise (its other ops in one row: eager
PyTorch's optimizer runs aten ops too). Times are per step and summed over
ops: where both cores run ops at once the sum exceeds the step's wall time. Prints Markdown.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
from absl import app, flags

from benchmarks import train_step
from cnn_jax import host_memory, models

_MODEL = flags.DEFINE_string('model', 'resnet50', 'Registry name.')
_PRECISION = flags.DEFINE_enum('precision', 'fp32', ['fp32', 'bf16'], 'Compute precision.')
_TOP = flags.DEFINE_integer('top', 8, 'Slowest single jax ops listed.')

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?\b([a-z\-]+)\(')


def jax_kind(opcode: str, line: str, bodies: dict[str, str]) -> str:
  """The kind of one op of the compiled step's entry computation (`bodies`: fused computations'
  text by name, for a fusion whose own metadata XLA dropped)."""
  target = re.search(r'custom_call_target="([^"]+)"', line)
  if target and 'conv' in target.group(1):
    return 'convolution (oneDNN)'
  if target and 'pool' in target.group(1):
    return 'pooling (oneDNN)'
  if target and 'batch_norm' in target.group(1):
    return 'batch norm (kernel)'
  if target and 'matmul' in target.group(1):
    return 'dense (dot)'
  if opcode == 'convolution':
    return 'convolution (XLA)'
  called = re.search(r'calls=%([\w.\-]+)', line)
  body = bodies.get(called.group(1), '') if called else ''
  if opcode == 'dot' or ' dot(' in body:
    return 'dense (dot)'
  if 'reduce-window' in line or ' reduce-window(' in body:
    return 'large sums (XLA reduce-window)'
  text = line if 'op_name=' in line or not called else body
  op_names = re.findall(r'op_name="([^"]+)"', text)
  if not op_names:
    return 'other ops: unattributed'
  if any('transpose(jvp(' in n for n in op_names):
    return 'other ops: backward'
  if any('jvp(' in n for n in op_names):
    return 'other ops: forward'
  return 'other ops: update'


def _bodies(hlo: str) -> dict[str, str]:
  """The text of every computation of an HLO module, by name."""
  return {m.group(1): m.group(2) for m in re.finditer(r'^%([\w.\-]+) .*?\{\n(.*?)\n\}', hlo,
                                                      re.M | re.S)}


def torch_kind(name: str) -> str:
  """The kind of one aten op of the eager step."""
  for word, kind in (('conv', 'convolution (oneDNN)'), ('pool', 'pooling (oneDNN)'),
                     ('batch_norm', 'batch norm (kernel)'),
                     ('addmm', 'dense (dot)'), ('::mm', 'dense (dot)')):
    if word in name:
      return kind
  return 'other ops: all phases'


def profile_jax(name: str, size: int, batch: int, bf16: bool, steps: int):
  """(seconds per step, {kind: op seconds per step}, [(op seconds, op, kind)])."""
  run, _, compiled = train_step.jax_step(name, size, batch, bf16)
  hlo = compiled.as_text()
  bodies = _bodies(hlo)
  kinds = {}
  for line in hlo.split('ENTRY', 1)[1].splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      kinds[match.group(1)] = jax_kind(match.group(2), line, bodies)
  run()
  run()
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    t0 = time.perf_counter()
    for _ in range(steps):
      run()
    step_s = (time.perf_counter() - t0) / steps
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  per_op = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in kinds:
      per_op[e['name']] += e.get('dur', 0) / 1e6 / steps
  by_kind = collections.Counter()
  for op, seconds in per_op.items():
    by_kind[kinds[op]] += seconds
  top = [(seconds, op, kinds[op]) for op, seconds in per_op.most_common(_TOP.value)]
  return step_s, by_kind, top


def profile_torch(name: str, size: int, batch: int, bf16: bool, steps: int):
  """(seconds per step, {kind: self CPU seconds per step}), or None without torch."""
  step = train_step.torch_step(name, size, batch, bf16)
  if step is None:
    return None
  import torch  # pylint: disable=g-import-not-at-top
  step()
  step()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    step_s = (time.perf_counter() - t0) / steps
  by_kind = collections.Counter()
  for event in prof.key_averages():
    if event.key.startswith('aten::'):
      by_kind[torch_kind(event.key)] += event.self_cpu_time_total / 1e6 / steps
  return step_s, by_kind


def _cell(seconds: dict[str, float], kind: str) -> str:
  return f'{seconds[kind]:.3f}' if kind in seconds else '-'


def main(argv):
  del argv
  # --batch and --steps are benchmarks.train_step's flags.
  name, bf16, steps = _MODEL.value, _PRECISION.value == 'bf16', flags.FLAGS.steps
  batch = flags.FLAGS.batch
  size = models.get_info(name).input_size
  jax_s, jax_kinds, top = profile_jax(name, size, batch, bf16, steps)
  torch_result = profile_torch(name, size, batch, bf16, steps)
  torch_s, torch_kinds = torch_result or (None, {})
  print(f'{name}, {_PRECISION.value}, batch {batch}, {train_step.device_name()}; '
        f'op seconds per step (summed over ops, {steps} profiled steps)\n')
  print('| kind | jax s | torch s |\n| --- | ---: | ---: |')
  jax_kinds['other ops: all phases'] = sum(v for k, v in jax_kinds.items() if k.startswith('other'))
  for kind in sorted(set(jax_kinds) | set(torch_kinds)):
    print(f'| {kind} | {_cell(jax_kinds, kind)} | {_cell(torch_kinds, kind)} |')
  torch_cell = f'{torch_s:.3f}' if torch_s else '-'
  print(f'| **step (wall)** | **{jax_s:.3f}** | **{torch_cell}** |\n')
  print('Slowest jax ops:\n\n| op | kind | s |\n| --- | --- | ---: |')
  for seconds, op, kind in top:
    print(f'| {op} | {kind} | {seconds:.3f} |')


if __name__ == '__main__':
  host_memory.keep_freed_memory()
  app.run(main)
