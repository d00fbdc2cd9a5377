"""Metrics: sums kept on device by the jitted steps, and a writer for console, JSON lines and TensorBoard.

The train step adds each batch into a small dict of device scalars; the host fetches it only every
`log_every_steps`, so training never waits on a device-to-host copy in between.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from absl import logging


def zeros() -> dict[str, jax.Array]:
  """Empty accumulators. `nonfinite_step` is the first train step whose loss was NaN/inf, or -1."""
  return {'loss': jnp.zeros((), jnp.float32), 'top1': jnp.zeros((), jnp.float32),
          'top5': jnp.zeros((), jnp.float32), 'count': jnp.zeros((), jnp.float32),
          'nonfinite_step': jnp.full((), -1, jnp.int32)}


def accumulate(sums: Mapping[str, jax.Array], logits: jax.Array, labels: jax.Array,
               mask: jax.Array, loss: jax.Array | None = None) -> dict[str, jax.Array]:
  """`sums` plus one batch: its summed loss, top-1/top-5 hits and example count, padding masked out.

  The one place a metric is defined: the train step, the trainer's validation and eval.py all add
  their batches here (and `summarise` turns the sums into means). `loss`: the batch's summed loss
  when it is not the plain cross-entropy of `logits` (training: label smoothing, auxiliary heads).
  """
  m = mask.astype(jnp.float32)
  if loss is None:
    loss = jnp.sum(cross_entropy(logits, labels) * m)
  top1, top5 = correct(logits, labels, mask)
  return {**sums, 'loss': sums['loss'] + loss, 'top1': sums['top1'] + top1,
          'top5': sums['top5'] + top5, 'count': sums['count'] + jnp.sum(m)}


def correct(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Number of masked examples whose label is the top-1 / within the top-5 logits."""
  k = min(5, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  hits = top == labels[:, None]
  m = mask.astype(jnp.float32)
  return jnp.sum(hits[:, 0] * m), jnp.sum(jnp.any(hits, axis=-1) * m)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32, with label smoothing (Szegedy et al. 2016 §7)."""
  logits = logits.astype(jnp.float32)
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def summarise(sums: Mapping[str, Any]) -> dict[str, float]:
  """Host sums -> means: loss, top1/top5 accuracy and their errors."""
  n = max(float(sums['count']), 1.0)
  top1, top5 = float(sums['top1']) / n, float(sums['top5']) / n
  return {'loss': float(sums['loss']) / n, 'top1': top1, 'top5': top5,
          'top1_error': 1.0 - top1, 'top5_error': 1.0 - top5}


class Writer:
  """Console lines (absl logging), `metrics.jsonl` and TensorBoard event files in `workdir`.

  `metrics.jsonl` holds one row per (split, step): a run resumed from step `start_step` first drops
  the rows its previous life wrote after that step (they are written again as the steps are
  replayed), TensorBoard likewise (`purge_step`), and a step written again replaces its row.
  Only process 0 writes; the others accept calls and do nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      self._path = os.path.join(workdir, 'metrics.jsonl')
      self._written = set()
      if os.path.exists(self._path):
        self._keep(lambda record: record.get('step', 0) <= start_step)
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=start_step + 1)
      self._jsonl = open(self._path, 'a', encoding='utf-8')

  def _keep(self, predicate) -> None:
    """Rewrite metrics.jsonl (atomically) with the rows that satisfy `predicate`."""
    with open(self._path, encoding='utf-8') as f:
      records = [json.loads(line) for line in f if line.strip()]
    kept = [r for r in records if predicate(r)]
    self._written = {(r.get('split'), r.get('step')) for r in kept}
    if len(kept) < len(records):
      with open(self._path + '.tmp', 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)
      os.replace(self._path + '.tmp', self._path)

  def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    if (split, step) in self._written:  # evaluated again (a run resumed at its end)
      self._jsonl.close()
      self._keep(lambda record: (record.get('split'), record.get('step')) != (split, step))
      self._jsonl = open(self._path, 'a', encoding='utf-8')
    record = {'step': step, 'split': split, 'time': time.time(), **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    self._written.add((split, step))
    for k, v in values.items():
      self._tb.add_scalar(f'{split}/{k}', v, step)
    self._tb.flush()
    logging.info('[%s] step %d: %s', split, step,
                 ', '.join(f'{k} {_fmt(v)}' for k, v in values.items()))

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def _fmt(v: float) -> str:
  return f'{v:.5g}' if isinstance(v, float) else str(v)
