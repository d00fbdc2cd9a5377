"""Orbax checkpoints of a training run: train state, data-iterator state and what model it belongs to.

`<workdir>/checkpoints/<step>/` holds two items:
- `state`: the train state pytree (params, BatchNorm statistics, optimizer state incl. learning
  rate, step, RNG key, EMA and plateau state), restored onto the *current* mesh's shardings, so a
  checkpoint written on 8 devices restores on 1 and the reverse;
- `data`: grain's iterator state as JSON (`grain.checkpoint.CheckpointSave`), one file per process.
The step's custom metadata names the model, its class count and image size; a workdir holding another
model's checkpoint is refused. Saving is asynchronous; an interrupted save leaves a temporary directory
that is ignored and cleaned up, so the latest *finished* checkpoint is always intact.
Retention: the latest `keep` checkpoints, plus the one with the lowest validation top-1 error.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or setup."""


class Checkpointer:
  """Save / resume a run in `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int, identity: Mapping[str, Any],
               async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.identity = dict(identity)
    top1_error = lambda metrics: metrics['top1_error']
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(keep),
        policies.BestN(get_metric_fn=top1_error, reverse=True, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes Orbax write each step's metrics to disk (the preservation policy decides what is
    # kept), so the best checkpoint is still known after a restart.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, best_fn=top1_error, best_mode='min',
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'data'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any,
           metrics: Mapping[str, float] | None = None) -> None:
    """Start saving `state` and the iterator position (the iterator state is read now)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    self.manager.save(step, args=args, metrics=dict(metrics) if metrics else None,
                      custom_metadata=self.identity, force=True)

  def check_compatible(self, step: int) -> None:
    """Refuse to resume from a checkpoint of another model / class count / image size."""
    saved = self.manager.metadata(step).custom_metadata or {}
    diffs = {k: (saved.get(k), v) for k, v in self.identity.items() if saved.get(k) != v}
    if diffs:
      detail = '; '.join(f'{k}: checkpoint has {a!r}, this config has {b!r}'
                         for k, (a, b) in diffs.items())
      raise IncompatibleCheckpointError(
          f'{self.directory} holds a checkpoint (step {step}) of a different run ({detail}). '
          'Refusing to resume: use another --workdir, or delete that directory to start over.')

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
    """The train state at `step` with `abstract_state`'s shardings; the iterator is repositioned.

    A checkpoint written by another number of processes restores too: grain keeps one iterator
    state per process (`data/process_<i>-of-<n>.json`), and as cnn_jax.data's train loaders count
    whole batches whose global content does not depend on the process count, process 0's position
    is every process's.
    """
    self.check_compatible(step)
    data_dir = os.path.join(self.directory, str(step), 'data')
    own = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    if os.path.exists(os.path.join(data_dir, own)):
      return self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=grain.checkpoint.CheckpointRestore(data_iterator)))['state']
    written = sorted(glob.glob(os.path.join(data_dir, 'process_0-of-*.json')))
    if not written:
      raise FileNotFoundError(f'{data_dir} holds no data-iterator state ({own} expected)')
    state = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))['state']
    with open(written[0], encoding='utf-8') as f:
      data_iterator.set_state(json.load(f))
    logging.info('data position of %s (another process count) restored into %s', written[0], own)
    return state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_state(workdir: str, step: int | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
  """(step, train state as nested dicts of arrays, metadata) of a run's checkpoint, no target needed.

  The arrays land on this process's first device, whatever device count wrote them. `step`
  defaults to the latest. Variables appear as {'value': array} leaves, as Orbax stores them.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with ocp.CheckpointManager(directory,
                             item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no finished checkpoint in {directory}')
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step)['state'].tree)
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return step, state['state'], dict(manager.metadata(step).custom_metadata or {})


def abstract(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, to restore onto the current mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)
