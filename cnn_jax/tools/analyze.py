"""`python -m cnn_jax.tools.analyze [name ...]`: the zoo analysed as Canziani et al. 2016 did.

Canziani, Paszke, Culurciello 2016, "An Analysis of Deep Neural Network Models for Practical
Applications": accuracy against operations with bubble size = parameters (Fig. 2), forward time
per image (Fig. 3) and memory (Fig. 4) against batch size, accuracy against throughput (Fig. 5).

Per model: parameters and GMACs (`cnn_jax.models.stats`, counted from the model itself), G-Ops =
2 x GMACs (the paper counts a multiply-accumulate as two operations), eval-mode forward time per
image and peak memory at each batch size, and training images/s of the trainer's train step
(`trainer.train_step`: its loss, forward + backward + SGD-momentum update). Peak memory is XLA's compiled memory analysis of the jitted function: argument +
output + temporary buffers, less outputs aliased to donated arguments. It is what XLA allocates for
one call, parameters included; it leaves out the Python process, the runtime and the compiled code.

Accuracy, in %, is the user's own (JSON lines written by eval.py, `--results FILE`, whose fractions
are converted on reading; the last line per model wins) where present, else the published value
from the registry, marked as such.

A batch size that would exceed the memory limit or the per-model time budget is skipped and
reported, as is a model that fails; the run goes on. Writes to `--outdir`: analysis.csv (one row
per model), analysis_batches.csv (one row per model and batch size), analysis.md, and the plots
accuracy_vs_gops.png, forward_time_vs_batch.png, memory_vs_batch.png, accuracy_vs_throughput.png.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cnn_jax import config as config_lib
from cnn_jax import metrics
from cnn_jax import models
from cnn_jax import trainer
from cnn_jax.models import stats
from cnn_jax.tools import common

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MODEL_COLUMNS = (
    'model', 'params', 'gmacs', 'gops', 'image_size', 'top1', 'top5', 'accuracy_source',
    'train_batch', 'train_step_ms', 'train_images_per_s', 'train_memory_mib', 'status')
BATCH_COLUMNS = (
    'model', 'batch', 'forward_ms', 'ms_per_image', 'images_per_s', 'memory_mib', 'compile_s',
    'status')
FIGURES = ('accuracy_vs_gops.png', 'forward_time_vs_batch.png', 'memory_vs_batch.png',
           'accuracy_vs_throughput.png')
FIGSIZE, DPI = (10, 7), 100  # every figure is 1000 x 700 pixels


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def load_results(paths: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Accuracy in % per model from eval.py's JSON lines, whose top1/top5 are fractions in [0, 1]
  (the one place where analyze converts them); later lines win."""
  results = {}
  for path in paths:
    with open(path, encoding='utf-8') as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          name, top1 = record['model'], float(record['top1'])
          top5 = None if record.get('top5') is None else float(record['top5'])
        except (ValueError, KeyError, TypeError) as e:
          raise ValueError(f'{path}:{lineno}: expected a JSON object with "model" and "top1" '
                           f'(as eval.py writes), got {line.strip()[:80]!r} ({e})') from None
        if not all(0 <= v <= 1 for v in (top1, top5) if v is not None):
          raise ValueError(f'{path}:{lineno}: top1 and top5 must be fractions in [0, 1], as eval.py '
                           f'writes them; got {top1} and {top5}')
        results[name] = {'top1': 100 * top1, 'top5': None if top5 is None else 100 * top5,
                         'source': f'own eval ({os.path.basename(path)}'
                                   + (f', n={record["n"]})' if 'n' in record else ')')}
  return results


def memory_bytes(compiled) -> int | None:
  """What XLA allocates for one call: arguments + outputs + temporaries - donated aliases."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)


@dataclasses.dataclass
class Budget:
  """Wall-clock seconds left for one model."""
  deadline: float

  def left(self) -> float:
    return self.deadline - time.perf_counter()


def _time_calls(call: Callable[[], Any], repeats: int, budget: Budget) -> float:
  """Median seconds of `call` after one warm-up call; fewer repeats when the budget runs out."""
  jax.block_until_ready(call())
  times = []
  while len(times) < repeats and (not times or budget.left() > times[-1]):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _estimate(prev: dict | None, batch: int, repeats: int, factor: float = 1.0) -> float:
  """Seconds to compile and time `batch`, extrapolated linearly from a measured batch size."""
  if prev is None:
    return 0.0
  run = prev['forward_ms'] / 1e3 * batch / prev['batch'] * factor
  return prev['compile_s'] * factor + (repeats + 1) * run


def _mib(n: int | None) -> float | None:
  return None if n is None else n / 2**20


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'[:200]


def measure_forward(model: nnx.Module, image_size: int, batch_sizes: Sequence[int], *,
                    repeats: int, max_bytes: int, budget: Budget, name: str = '') -> list[dict]:
  """Forward (eval mode) time and memory per batch size; later sizes skipped when one cannot be."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=False))
  rows, prev, stop = [], None, None
  for batch in batch_sizes:
    row = dict.fromkeys(BATCH_COLUMNS)
    row.update(model=name, batch=batch)
    rows.append(row)
    if stop is None and prev is not None and _estimate(prev, batch, repeats) > budget.left():
      stop = f'skipped: time budget (~{_estimate(prev, batch, repeats):.0f} s needed)'
    if stop is not None:
      row['status'] = stop
      continue
    try:
      start = time.perf_counter()
      x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
      compiled = forward.lower(state, x).compile()
      row['compile_s'] = time.perf_counter() - start
      need = memory_bytes(compiled)
      row['memory_mib'] = _mib(need)
      if need is not None and need > max_bytes:
        stop = row['status'] = f'skipped: needs {need / 2**30:.1f} GiB > limit {max_bytes / 2**30:.1f} GiB'
        continue
      images = jnp.zeros(x.shape, x.dtype)
      seconds = _time_calls(lambda: compiled(state, images), repeats, budget)
    except Exception as e:  # pylint: disable=broad-except  # a model that does not fit is reported
      stop = row['status'] = f'failed: {_first_line(e)}'
      continue
    row.update(forward_ms=seconds * 1e3, ms_per_image=seconds * 1e3 / batch,
               images_per_s=batch / seconds, status='ok')
    prev = row
    _log(f'  {name} forward batch {batch:>3}: {row["ms_per_image"]:8.2f} ms/image, '
         f'{row["memory_mib"]:9.1f} MiB, compiled in {row["compile_s"]:.1f} s')
  return rows


def train_step(model: nnx.Module, tx: optax.GradientTransformation):
  """The trainer's own jitted step (`trainer.train_step`: its loss, auxiliary heads at weight 1, which
  costs what any weight does) for `model`, and a train state holding `model`'s values (copied: the
  step donates it)."""
  config = config_lib.base_config()
  config.aux_loss_weight = 1.0
  graphdef, params, rng_state, model_state = trainer.split_model(model)
  params, model_state = jax.tree.map(jnp.copy, (params, model_state))
  state = trainer.train_state(config, params, model_state, tx)
  step = jax.jit(functools.partial(trainer.train_step, graphdef=graphdef, rng_state=rng_state,
                                   config=config, tx=tx), donate_argnums=(0, 1))
  return step, state


def measure_training(model: nnx.Module, image_size: int, batch: int, num_classes: int, *,
                     repeats: int, max_bytes: int, budget: Budget, forward_rows: list[dict],
                     name: str = '') -> dict:
  """Training images/s; the batch is halved until the step fits the memory limit and budget."""
  step, state = train_step(model, optax.sgd(0.01, momentum=0.9))
  measured = [r for r in forward_rows if r['status'] == 'ok']
  status = 'skipped: no forward pass measured'
  while measured and batch >= 1:
    nearest = min(measured, key=lambda r: abs(math.log(r['batch'] / batch)))
    estimate = _estimate(nearest, batch, repeats, factor=3.0)  # backward ~ 2 x forward
    if estimate > budget.left():
      status = f'skipped: time budget (~{estimate:.0f} s needed at batch {batch})'
      batch //= 2
      continue
    batch_data = {'image': jnp.zeros((batch, image_size, image_size, 3), jnp.float32),
                  'label': jnp.arange(batch, dtype=jnp.int32) % num_classes,
                  'mask': jnp.ones((batch,), bool)}
    try:
      compiled = step.lower(state, metrics.zeros(), batch_data).compile()
      need = memory_bytes(compiled)
      if need is not None and need > max_bytes:
        status = f'skipped: needs {need / 2**30:.1f} GiB > limit {max_bytes / 2**30:.1f} GiB'
        batch //= 2
        continue
      carry = [state, metrics.zeros()]

      def call():
        carry[:] = compiled(*carry, batch_data)
        return carry

      seconds = _time_calls(call, repeats, budget)
    except Exception as e:  # pylint: disable=broad-except
      return {'train_batch': batch, 'status': f'training failed: {_first_line(e)}'}
    _log(f'  {name} train step batch {batch:>3}: {batch / seconds:8.2f} images/s, '
         f'{_mib(need):9.1f} MiB')
    return {'train_batch': batch, 'train_step_ms': seconds * 1e3,
            'train_images_per_s': batch / seconds, 'train_memory_mib': _mib(need), 'status': 'ok'}
  return {'status': f'training {status}'}


def create_model(name: str, num_classes: int = 1000, **kwargs) -> nnx.Module:
  """The registered model with cheap stand-in values: N(0, 0.01) parameters, BatchNorm statistics 1.

  Timings and memory depend on shapes and dtypes, not on values; the models' own initialisers
  compile op by op and cost more CPU time than measuring the big models does.
  """
  abstract = nnx.eval_shape(lambda: models.create(name, num_classes, **kwargs))
  graphdef, params, stats_, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: jnp.asarray(0.01 * rng.standard_normal(x.shape, np.float32), x.dtype), params)
  stats_ = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), stats_)
  rest = jax.tree.map(lambda x: jax.random.key(0) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else jnp.zeros(x.shape, x.dtype), rest)
  return nnx.merge(graphdef, params, stats_, rest)


def analyze_model(name: str, *, image_size: int | None, batch_sizes: Sequence[int],
                  train_batch: int, num_classes: int, repeats: int, budget_s: float,
                  max_bytes: int, dtype, results: dict) -> tuple[dict, list[dict]]:
  """One model's row (counts, accuracy, training) and its rows per batch size."""
  info = models.get_info(name)
  size = image_size or info.input_size
  row = dict.fromkeys(MODEL_COLUMNS)
  row.update(model=name, image_size=size)
  if name in results:
    row.update(top1=results[name]['top1'], top5=results[name]['top5'],
               accuracy_source=results[name]['source'])
  elif info.top1 is not None:
    row.update(top1=info.top1, top5=info.top5, accuracy_source=f'published ({info.source})')
  try:
    model = create_model(name, num_classes, dtype=dtype)
    row['params'] = stats.count_params(model)
    row['gmacs'] = stats.count_macs(model, size) / 1e9
    row['gops'] = 2 * row['gmacs']
  except Exception as e:  # pylint: disable=broad-except
    row['status'] = f'failed: {_first_line(e)}'
    return row, [dict(dict.fromkeys(BATCH_COLUMNS), model=name, batch=b, status=row['status'])
                 for b in batch_sizes]
  _log(f'  {name}: {row["params"]:,} params, {row["gmacs"]:.3f} GMACs at {size} px')
  # Forward time gets 60% of the budget; the training step the rest.
  budget = Budget(time.perf_counter() + budget_s)
  forward_budget = Budget(time.perf_counter() + 0.6 * budget_s)
  batch_rows = measure_forward(model, size, batch_sizes, repeats=repeats, max_bytes=max_bytes,
                               budget=forward_budget, name=name)
  row.update(measure_training(model, size, train_batch, num_classes, repeats=repeats,
                              max_bytes=max_bytes, budget=budget, forward_rows=batch_rows,
                              name=name))
  return row, batch_rows


# ---------------------------------------------------------------------------------------------
# Tables.


def _cell(value, spec: str = '') -> str:
  if value is None:
    return '—'
  return format(value, spec) if spec else str(value)


def write_csv(path: str, rows: list[dict], columns: Sequence[str]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ('' if row.get(k) is None else row[k]) for k in columns})


def markdown(model_rows: list[dict], batch_rows: list[dict], batch_sizes: Sequence[int],
             hardware: str, dtype_name: str) -> str:
  """analysis.md: a summary table, then forward time and memory per batch size."""
  lines = [f'Measured on {hardware}; {dtype_name} compute.', '',
           '| model | params (M) | GMACs | G-Ops | input | top-1 % | top-1 from | '
           'forward ms/image (batch 1) | train images/s (batch) | status |',
           '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |']
  by_model = {}
  for r in batch_rows:
    by_model.setdefault(r['model'], {})[r['batch']] = r
  for r in model_rows:
    first = by_model.get(r['model'], {}).get(batch_sizes[0], {})
    params = None if r['params'] is None else r['params'] / 1e6
    train = (None if r['train_images_per_s'] is None
             else f'{r["train_images_per_s"]:.1f} ({r["train_batch"]})')
    lines.append(
        f'| {r["model"]} | {_cell(params, ".2f")} | {_cell(r["gmacs"], ".3f")} | '
        f'{_cell(r["gops"], ".3f")} | {r["image_size"]} | {_cell(r["top1"], ".2f")} | '
        f'{_cell(r["accuracy_source"])} | {_cell(first.get("ms_per_image"), ".2f")} | '
        f'{_cell(train)} | {r["status"]} |')
  for title, key, spec in (('Forward time per image (ms), eval mode', 'ms_per_image', '.2f'),
                           ('Peak memory (MiB), XLA compiled memory analysis', 'memory_mib', '.0f')):
    lines += ['', f'{title}, by batch size:', '',
              '| model | ' + ' | '.join(str(b) for b in batch_sizes) + ' |',
              '| --- |' + ' ---: |' * len(batch_sizes)]
    for r in model_rows:
      cells = []
      for b in batch_sizes:
        br = by_model.get(r['model'], {}).get(b, {})
        cells.append(_cell(br.get(key), spec) if br.get('status') == 'ok' else '—')
      lines.append(f'| {r["model"]} | ' + ' | '.join(cells) + ' |')
  skipped = [r for r in batch_rows if r['status'] != 'ok']
  if skipped:
    lines += ['', 'Not measured (—):', '']
    lines += [f'- {r["model"]} batch {r["batch"]}: {r["status"]}' for r in skipped]
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Figures.


def _styles(n: int):
  """Distinct (colour, marker, linestyle) for n models."""
  plt = common.pyplot()
  colours = plt.get_cmap('tab10').colors
  markers, lines = 'osD^vP*X<>', ('-', '--', ':', '-.')
  return [(colours[i % 10], markers[i % len(markers)], lines[(i // 10) % len(lines)])
          for i in range(n)]


def _accuracy_scatter(plt, rows: list[dict], x_key: str, xlabel: str, title: str, path: str,
                      hardware: str) -> None:
  fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
  points = [r for r in rows if r['top1'] is not None and r[x_key] is not None]
  scale = 2000 / max([r['params'] for r in points], default=1)  # the largest bubble: 2000 pt^2
  for r, (colour, _, _) in zip(points, _styles(len(points))):
    own = r['accuracy_source'].startswith('own')
    ax.scatter(r[x_key], r['top1'], s=scale * r['params'], facecolors=colour if own else 'none',
               edgecolors=colour, alpha=0.6, linewidths=1.5)
    ax.scatter(r[x_key], r['top1'], s=6, color=colour)
    ax.annotate(r['model'] + ('' if own else '*'), (r[x_key], r['top1']), fontsize=8,
                xytext=(4, 4), textcoords='offset points')
  if points:
    biggest = max(r['params'] for r in points)
    sizes = [biggest / 10**k for k in range(3) if biggest / 10**k >= 1e5]
    handles = [ax.scatter([], [], s=scale * p, facecolors='none', edgecolors='grey')
               for p in sizes]
    ax.legend(handles, [f'{p / 1e6:.3g} M params' for p in sizes], loc='lower right',
              labelspacing=2, borderpad=1.2, fontsize=8)
  missing = [r['model'] for r in rows if r not in points]
  note = 'bubble area ∝ parameters; filled: own eval result; hollow and *: published accuracy'
  if missing:
    note += f'; not shown (no accuracy or measurement): {", ".join(missing)}'
  ax.set_xscale('log')
  ax.set(xlabel=xlabel, ylabel='top-1 accuracy (%)', title=title)
  ax.grid(True, which='both', alpha=0.3)
  ax.margins(0.15)
  fig.text(0.01, 0.01, f'{note}\n{hardware}', fontsize=7, va='bottom', wrap=True)
  fig.subplots_adjust(bottom=0.15)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def _per_batch_plot(plt, model_rows: list[dict], batch_rows: list[dict], key: str, ylabel: str,
                    title: str, path: str, hardware: str) -> None:
  batch_sizes = sorted({b['batch'] for b in batch_rows})
  fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
  for r, (colour, marker, line) in zip(model_rows, _styles(len(model_rows))):
    pts = [(b['batch'], b[key]) for b in batch_rows
           if b['model'] == r['model'] and b['status'] == 'ok']
    if pts:
      ax.plot(*zip(*pts), color=colour, marker=marker, linestyle=line, label=r['model'])
  ax.set_xscale('log', base=2)
  ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
  ax.set_yscale('log')
  ax.set(xlabel='batch size', ylabel=ylabel, title=title)
  ax.grid(True, which='both', alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7, ncol=2, loc='best')
  fig.text(0.01, 0.01, hardware, fontsize=7)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def plot(model_rows: list[dict], batch_rows: list[dict], outdir: str, hardware: str) -> list[str]:
  """The four figures, 1000 x 700 px PNGs in `outdir`; returns their paths."""
  plt = common.pyplot()
  paths = [os.path.join(outdir, f) for f in FIGURES]
  _accuracy_scatter(plt, model_rows, 'gops', 'G-Ops per image (2 x multiply-accumulates)',
                    'Top-1 accuracy vs operations', paths[0], hardware)
  _per_batch_plot(plt, model_rows, batch_rows, 'ms_per_image', 'forward time per image (ms)',
                  'Forward time per image vs batch size (eval mode)', paths[1], hardware)
  _per_batch_plot(plt, model_rows, batch_rows, 'memory_mib', 'peak memory (MiB)',
                  'Peak memory vs batch size (XLA: arguments + outputs + temporaries)',
                  paths[2], hardware)
  _accuracy_scatter(plt, model_rows, 'train_images_per_s', 'training images/s (log)',
                    'Top-1 accuracy vs training throughput', paths[3], hardware)
  return paths


# ---------------------------------------------------------------------------------------------


def read_tables(outdir: str) -> tuple[list[dict], list[dict]]:
  """The rows of analysis.csv and analysis_batches.csv in `outdir`, with numbers as numbers."""
  def parse(value: str):
    if value == '':
      return None
    for kind in (int, float):
      try:
        return kind(value)
      except ValueError:
        pass
    return value

  tables = []
  for name in ('analysis.csv', 'analysis_batches.csv'):
    with open(os.path.join(outdir, name), newline='', encoding='utf-8') as f:
      tables.append([{k: (v if k in ('model', 'status', 'accuracy_source') else parse(v))
                      for k, v in row.items()} for row in csv.DictReader(f)])
  return tables[0], tables[1]


def _batch_sizes(text: str) -> list[int]:
  try:
    sizes = sorted({int(s) for s in text.split(',') if s.strip()})
  except ValueError:
    raise argparse.ArgumentTypeError(f'batch sizes must be integers like 1,2,4, got {text!r}')
  if not sizes or sizes[0] < 1:
    raise argparse.ArgumentTypeError(f'batch sizes must be positive, got {text!r}')
  return sizes


def _default_memory_gib() -> float:
  return 0.75 * os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('names', nargs='*', help='models to analyse (default: all but tiny ones)')
  parser.add_argument('--tiny', action='store_true', help='with no names: include tiny variants')
  parser.add_argument('--outdir', default='analysis', help='where tables and figures go')
  parser.add_argument('--results', nargs='+', action='extend', default=[], metavar='FILE',
                      help="eval.py results.jsonl files with the user's own accuracy")
  parser.add_argument('--batch-sizes', type=_batch_sizes, default=list(BATCH_SIZES))
  parser.add_argument('--image-size', type=int, help="default: each model's own input size")
  parser.add_argument('--train-batch', type=int, default=32, help='batch of the training step')
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='compute dtype (parameters stay float32)')
  parser.add_argument('--repeats', type=int, default=3, help='timed calls per measurement')
  parser.add_argument('--budget', type=float, default=120.0,
                      help='seconds per model; larger batch sizes that would not fit are skipped')
  parser.add_argument('--max-memory-gib', type=float, default=_default_memory_gib(),
                      help='skip batch sizes needing more (default: 75%% of RAM)')
  parser.add_argument('--redraw', action='store_true',
                      help='measure nothing: redraw the tables and figures from the CSV files in '
                           '--outdir, with accuracy from --results where given')
  args = parser.parse_args(argv)
  if args.redraw:
    redraw(args.outdir, load_results(args.results))
    return

  unknown = [n for n in args.names if n not in models.list_models()]
  if unknown:
    parser.error(f'unknown model(s) {", ".join(unknown)}; known: {", ".join(models.list_models())}')
  names = args.names or models.list_models(include_tiny=args.tiny)
  results = load_results(args.results)
  os.makedirs(args.outdir, exist_ok=True)
  hardware = common.hardware()
  dtype = jnp.dtype(args.dtype)
  _log(f'Analysing {len(names)} model(s) on {hardware}; budget {args.budget:.0f} s per model')

  model_rows, batch_rows = [], []
  for i, name in enumerate(names, 1):
    _log(f'[{i}/{len(names)}] {name}')
    start = time.perf_counter()
    row, rows = analyze_model(
        name, image_size=args.image_size, batch_sizes=args.batch_sizes,
        train_batch=args.train_batch, num_classes=args.num_classes, repeats=args.repeats,
        budget_s=args.budget, max_bytes=int(args.max_memory_gib * 2**30), dtype=dtype,
        results=results)
    model_rows.append(row)
    batch_rows += rows
    skipped = [r['batch'] for r in rows if r['status'] != 'ok']
    _log(f'[{i}/{len(names)}] {name} done in {time.perf_counter() - start:.0f} s: {row["status"]}'
         + (f'; batch sizes not measured: {skipped}' if skipped else ''))
    # Tables after every model, so that an interrupted run keeps what it measured.
    table = write_tables(args.outdir, model_rows, batch_rows, args.batch_sizes, hardware, args.dtype)
  plot(model_rows, batch_rows, args.outdir, hardware)
  print(table)
  _log(f'Wrote analysis.csv, analysis_batches.csv, analysis.md and {len(FIGURES)} PNGs to '
       f'{args.outdir}')


def redraw(outdir: str, results: dict) -> None:
  """Tables and figures again from a previous run's CSV files, with newer eval results."""
  model_rows, batch_rows = read_tables(outdir)
  for row in model_rows:
    if row['model'] in results:
      r = results[row['model']]
      row.update(top1=r['top1'], top5=r['top5'], accuracy_source=r['source'])
  with open(os.path.join(outdir, 'analysis.md'), encoding='utf-8') as f:
    caption = f.readline().strip()  # 'Measured on <hardware>; <dtype> compute.'
  hardware, dtype_name = caption[len('Measured on '):].rsplit('; ', 1)
  batch_sizes = sorted({r['batch'] for r in batch_rows})
  write_tables(outdir, model_rows, batch_rows, batch_sizes, hardware, dtype_name.split()[0])
  plot(model_rows, batch_rows, outdir, hardware)
  _log(f'Redrew the tables and {len(FIGURES)} PNGs in {outdir}')


def write_tables(outdir, model_rows, batch_rows, batch_sizes, hardware, dtype_name) -> str:
  """analysis.csv, analysis_batches.csv and analysis.md in `outdir`; returns the Markdown."""
  write_csv(os.path.join(outdir, 'analysis.csv'), model_rows, MODEL_COLUMNS)
  write_csv(os.path.join(outdir, 'analysis_batches.csv'), batch_rows, BATCH_COLUMNS)
  table = markdown(model_rows, batch_rows, batch_sizes, hardware, dtype_name)
  with open(os.path.join(outdir, 'analysis.md'), 'w', encoding='utf-8') as f:
    f.write(table)
  return table


if __name__ == '__main__':
  main()
