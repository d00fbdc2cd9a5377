"""Orbax checkpoints of a training run: train state, data-iterator state and what model it belongs to.

`<workdir>/checkpoints/<step>/` holds two items:
- `state`: the train state pytree (params, BatchNorm statistics, optimizer state incl. learning
  rate, step, RNG key, EMA and plateau state), restored onto the *current* mesh's shardings, so a
  checkpoint written on 8 devices restores on 1 and the reverse;
- `data`: grain's iterator state as JSON (`grain.checkpoint.CheckpointSave`), one file per process.
The step's custom metadata names the model, its class count and image size, and the config fields
that shape the train state (STATE_FIELDS); a workdir holding another model's checkpoint, or one
whose state another optimizer / schedule / EMA setting shaped, is refused naming the field.
Saving is asynchronous; an interrupted save leaves a temporary directory that is ignored and cleaned
up. A save that fails (unwritable directory, disk full) raises CheckpointSaveError: at once where
the directory cannot be written, else at the next `check` (the trainer's next step), save or
`wait`. Resuming takes the newest step that reads: a step directory without Orbax's commit markers
is skipped, a damaged one (a truncated or missing file) is logged and set aside, never deleted, and
the previous step is used.
Retention: the latest `keep` checkpoints, plus the one with the lowest validation top-1 error.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, Callable, Mapping, Sequence, TypeVar

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from cnn_jax import errors
from cnn_jax import parallel

T = TypeVar('T')


class IncompatibleCheckpointError(errors.UserError, ValueError):
  """The workdir holds a checkpoint of a different model or setup."""


class CheckpointSaveError(errors.UserError):
  """A checkpoint could not be written (unwritable directory, disk full, quota ...)."""


class DamagedCheckpointError(errors.UserError):
  """No checkpoint of the workdir can be read."""


# Config fields that shape the train state's tree, each with the part of its value that matters: a
# checkpoint restores only into a config that agrees on all of them (optim.make_optimizer,
# optim.make_plateau, trainer.create_train_state).
STATE_FIELDS = {
    'optimizer.name': lambda v: v,
    'optimizer.momentum': bool,  # no momentum: no trace in the optimizer state
    'optimizer.weight_decay': bool,
    'optimizer.grad_clip_norm': bool,
    'schedule.name': lambda v: v == 'plateau',  # the plateau rule keeps its own state
    'ema_decay': bool,  # the moving average of the weights
}
# What Orbax writes last into a step directory; a directory without them was never finished.
COMMIT_MARKERS = ('_CHECKPOINT_METADATA', 'commit_success.txt')


def state_fields(config: Any) -> dict[str, Any]:
  """The values of STATE_FIELDS in `config`, stored with each checkpoint."""
  def get(path):
    node = config
    for key in path.split('.'):
      node = node[key]
    return node
  return {path: get(path) for path in STATE_FIELDS}


def complete_steps(manager: ocp.CheckpointManager) -> list[int]:
  """The manager's steps whose directories hold Orbax's commit markers, oldest first; each
  incomplete one (copied or written only in part) is logged and skipped."""
  steps = []
  for step in sorted(manager.all_steps()):
    path = os.path.join(str(manager.directory), str(step))
    missing = [m for m in COMMIT_MARKERS if not os.path.exists(os.path.join(path, m))]
    if missing:
      logging.warning('checkpoint step %d in %s is incomplete (no %s): skipped', step,
                      manager.directory, ' or '.join(missing))
    else:
      steps.append(step)
  return steps


def _chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it was raised from, outermost first."""
  chain = [error]
  while (chain[-1].__cause__ or chain[-1].__context__) is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


def root_cause(error: BaseException) -> str:
  """`Type: message` of the innermost exception `error` was raised from (Orbax and TensorStore wrap
  the read error of a file in several layers), on one line."""
  error = _chain(error)[-1]
  return f'{type(error).__name__}: {errors.message(error)}'


def restore_newest(steps: Sequence[int], restore_fn: Callable[[int], T],
                   where: str) -> tuple[int, T, list[int]]:
  """(step, restore_fn(step), the newer steps that failed) for the newest of `steps` that reads.

  A step whose restore raises (a truncated or missing file, a corrupted tree) is logged as damaged
  and the previous one is tried; nothing is deleted. IncompatibleCheckpointError is raised at
  once (the config does not fit, not the checkpoint), and so are device errors. When none reads,
  DamagedCheckpointError names each step and its error.
  """
  damaged = []
  for step in sorted(steps, reverse=True):
    try:
      result = restore_fn(step)
    except IncompatibleCheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if any(isinstance(x, (MemoryError, jax.errors.JaxRuntimeError)) for x in _chain(e)):
        raise  # out of (device) memory: the checkpoint may well be fine
      cause = root_cause(e)
      logging.warning('checkpoint step %d in %s is damaged and cannot be read (%s)', step, where,
                      cause)
      damaged.append((step, cause))
      continue
    if damaged:
      logging.warning('using checkpoint step %d of %s instead of the damaged step(s) %s', step,
                      where, ', '.join(str(s) for s, _ in damaged))
    return step, result, [s for s, _ in damaged]
  detail = '; '.join(f'step {s}: {c}' for s, c in damaged) or 'no finished step'
  raise DamagedCheckpointError(
      f'no checkpoint in {where} can be read ({detail}). Move the damaged step directories out of '
      'it to start over, or use another --workdir')


class Checkpointer:
  """Save / resume a run in `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int, identity: Mapping[str, Any],
               async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.identity = dict(identity)
    self._check_writable()
    top1_error = lambda metrics: metrics['top1_error']
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(keep),
        policies.BestN(get_metric_fn=top1_error, reverse=True, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes Orbax write each step's metrics to disk (the preservation policy decides what is
    # kept), so the best checkpoint is still known after a restart. The step directory is created
    # before save() returns: created in the background, a failure to create it leaves the save
    # waiting forever for a signal that never comes (Orbax 0.12.8).
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, best_fn=top1_error, best_mode='min',
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'data'))
    self._pending = None  # the step whose asynchronous save may still be running

  def _check_writable(self) -> None:
    """Fail at once, naming the directory and the cause, where no file can be created."""
    try:
      os.makedirs(self.directory, exist_ok=True)
      with tempfile.TemporaryFile(dir=self.directory):
        pass
    except OSError as e:
      raise CheckpointSaveError(
          f'cannot write checkpoints to {self.directory}: {e.strerror or e} ({type(e).__name__}). '
          'Make it a writable directory with free space, or pass another --workdir') from e

  def _save_failed(self, step: int, error: BaseException) -> CheckpointSaveError:
    return CheckpointSaveError(
        f'saving checkpoint step {step} to {self.directory} failed: {root_cause(error)}. '
        'Training stopped; free space or make the directory writable, then run again to resume '
        f'from the last saved step ({self.manager.latest_step() or "none yet"})')

  def latest_step(self) -> int | None:
    steps = complete_steps(self.manager)
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, data_iterator: Any,
           metrics: Mapping[str, float] | None = None) -> None:
    """Start saving `state` and the iterator position (the iterator state is read now). A failure
    of the previous asynchronous save or of this one raises CheckpointSaveError."""
    self.wait()
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    try:
      self.manager.save(step, args=args, metrics=dict(metrics) if metrics else None,
                        custom_metadata=self.identity, force=True)
    except Exception as e:
      raise self._save_failed(step, e) from e
    self._pending = step

  def check_compatible(self, step: int) -> None:
    """Refuse to resume from a checkpoint of another model / class count / image size, or whose
    train state another optimizer, schedule or EMA setting shaped (STATE_FIELDS)."""
    saved = self.manager.metadata(step).custom_metadata or {}
    if 'model' not in saved:  # not an IncompatibleCheckpointError: the next step is tried
      raise ValueError(f'step {step} has no readable metadata (_CHECKPOINT_METADATA)')
    same = lambda k, a, b: STATE_FIELDS[k](a) == STATE_FIELDS[k](b) if k in STATE_FIELDS else a == b
    # Fields of the state's shape that a checkpoint predating them lacks are not compared.
    diffs = {k: (saved.get(k), v) for k, v in self.identity.items()
             if not (k in STATE_FIELDS and k not in saved) and not same(k, saved.get(k), v)}
    if not diffs:
      return
    detail = '; '.join(f'{k}: checkpoint has {a!r}, this config has {b!r}'
                       for k, (a, b) in diffs.items())
    workdir = os.path.dirname(self.directory)
    if diffs.keys() <= STATE_FIELDS.keys():
      raise IncompatibleCheckpointError(
          f'cannot resume from step {step} in {self.directory}: the config differs in what the '
          f'train state holds ({detail}). Resume with the config of that run '
          f'({os.path.join(workdir, "config.json")}), or start a new run in another --workdir '
          f'from its weights with --config.init_weights={os.path.join(self.directory, str(step))}')
    raise IncompatibleCheckpointError(
        f'{self.directory} holds a checkpoint (step {step}) of a different run ({detail}). '
        'Refusing to resume: use another --workdir, or the config of that run '
        f'({os.path.join(workdir, "config.json")})')

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

  def restore_latest(self, abstract_state: Any, data_iterator: Any) -> tuple[int, Any] | None:
    """(step, state) of the newest finished checkpoint that reads (see `restore`); None when the
    directory holds no step.

    Incomplete step directories are skipped and damaged ones fall back to the previous step
    (`restore_newest`). Those newer than the step used are renamed `<step>.incomplete` /
    `<step>.damaged` (Orbax ignores them; nothing is deleted), so that this run saves those steps
    anew and the retention policy does not count them.
    """
    if not self.manager.all_steps():
      return None
    steps = complete_steps(self.manager)
    step, state, damaged = restore_newest(
        steps, lambda s: self.restore(s, abstract_state, data_iterator), self.directory)
    if jax.process_index() == 0:
      incomplete = [s for s in self.manager.all_steps() if s > step and s not in steps]
      for s, label in [(s, 'damaged') for s in damaged] + [(s, 'incomplete') for s in incomplete]:
        path = os.path.join(self.directory, str(s))
        aside = next(p for p in (f'{path}.{label}', *(f'{path}.{label}{i}' for i in range(1, 99)))
                     if not os.path.exists(p))
        os.rename(path, aside)
        logging.warning('moved the %s checkpoint step %d to %s (kept: delete it yourself once '
                        'inspected)', label, s, aside)
    parallel.wait_for_all_processes('cnn_jax:restored')
    self.manager.reload()
    return step, state

  def check(self) -> None:
    """Raise CheckpointSaveError if the asynchronous save has finished and failed; never waits."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Wait for the asynchronous save; its failure raises CheckpointSaveError."""
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      raise self._save_failed(step, e) from e
    # Orbax may log a failed finalisation without raising it: check the step is there.
    if jax.process_index() == 0 and not os.path.isdir(os.path.join(self.directory, str(step))):
      raise self._save_failed(step, FileNotFoundError(
          f'{os.path.join(self.directory, str(step))} was not written (see the errors above)'))

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
