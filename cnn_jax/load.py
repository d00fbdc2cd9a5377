"""Loading a trained or converted network: `restore(locate(path))`, the one way in.

eval.py, the tools (predict, filters), fine-tuning (`config.init_weights`) and the tests read networks
through these two functions. `path` is a train.py workdir (its latest checkpoint, the one with the best
validation top-1 error, or a given step), one step of it (`<workdir>/checkpoints/<step>`), or a
weights directory written by `python -m cnn_jax.convert`. A run that keeps a moving average (EMA) is
read as its average, as its validation used it; a damaged latest step falls back to the one before.
(Resuming a run restores its whole train state instead: `checkpoint.Checkpointer`.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx

from cnn_jax import checkpoint as ckpt_lib
from cnn_jax import models
from cnn_jax.convert import weights as weights_lib

PATH_FORMS = ('a train.py --workdir, one of its checkpoints/<step> directories, or a weights directory '
              'written by `python -m cnn_jax.convert`')


@dataclasses.dataclass
class Source:
  """What a path holds, read from metadata only (nothing restored yet)."""
  path: str  # the checkpoint step's directory, or the converted weights'
  name: str  # registered model name
  num_classes: int
  image_size: int  # the run's resolution; the registry's input size for converted weights
  model_kwargs: dict[str, Any]
  step: int | None  # None for converted weights
  workdir: str | None  # the train.py run; None for converted weights
  run_config: dict[str, Any] | None  # the run's config.json
  older_steps: tuple[int, ...] = ()  # the latest step's predecessors, read if it is damaged

  @property
  def data_config(self) -> dict[str, Any] | None:
    """The run's data config (its config.json); None for converted weights."""
    return self.run_config['data'] if self.run_config else None


@dataclasses.dataclass
class Network:
  """A restored network: its graph, weights and BatchNorm statistics (their moving average where the
  run keeps one, as the trainer's validation uses), on this process's first device."""
  source: Source
  graphdef: nnx.GraphDef
  weights: nnx.State
  rest: nnx.State  # RNG streams: unused in eval mode

  def model(self) -> nnx.Module:
    """The network as an `nnx.Module` (call it with `train=False`)."""
    return nnx.merge(self.graphdef, self.weights, self.rest)

  @property
  def description(self) -> str:
    """What was loaded, for messages: 'resnet18 step 300 of runs/x' or '... weights from DIR'."""
    s = self.source
    if s.workdir is None:
      return f'{s.name} weights from {s.path}'
    return f'{s.name} step {s.step} of {s.workdir}'

  @property
  def param_count(self) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(self.weights.filter(nnx.Param)))


def _run_manager(workdir: str) -> ocp.CheckpointManager:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(_no_checkpoint(workdir))
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'data': grain.checkpoint.CheckpointHandler()})


def _no_checkpoint(workdir: str) -> str:
  return (f'no finished checkpoint in {os.path.join(workdir, "checkpoints")}: train first '
          f'(python train.py --config=configs/<recipe>.py --workdir={workdir}), or pass '
          f'--checkpoint=<{PATH_FORMS}>')


def _best_step(workdir: str, steps: Sequence[int]) -> int:
  """The kept step with the lowest validation top-1 error that the run logged in metrics.jsonl."""
  errors = {}
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for record in map(json.loads, f):
        if record.get('split') == 'eval' and record['step'] in steps and 'top1_error' in record:
          errors[record['step']] = record['top1_error']  # a re-evaluated step: the last record
  if not errors:
    raise ValueError(f'--best: none of the checkpoints {list(steps)} of {workdir} has a validation '
                     'result in its metrics.jsonl; drop --best or pass --step')
  return min(errors, key=lambda s: (errors[s], -s))


def locate_run(workdir: str, step: int | None = None, best: bool = False) -> Source:
  """The checkpoint of the train.py run in `workdir` at `step`, the best one, or the latest."""
  workdir = os.path.abspath(workdir)
  with _run_manager(workdir) as manager:
    steps = ckpt_lib.complete_steps(manager)
    if not steps:
      raise FileNotFoundError(_no_checkpoint(workdir))
    if step is not None and step not in steps:
      raise FileNotFoundError(f'no checkpoint at step {step} in {workdir}; its steps: {steps}')
    older = step is None and not best
    if step is None:
      step = _best_step(workdir, steps) if best else max(steps)
    older = tuple(s for s in steps if s < step) if older else ()
    identity = manager.metadata(step).custom_metadata or {}
  config_path = os.path.join(workdir, 'config.json')
  if 'model' not in identity or not os.path.exists(config_path):
    raise ValueError(f'{workdir} is not a train.py workdir: it needs config.json and checkpoints '
                     'whose metadata names the model')
  with open(config_path, encoding='utf-8') as f:
    run_config = json.load(f)
  return Source(os.path.join(workdir, 'checkpoints', str(step)), identity['model'],
                identity['num_classes'], identity['image_size'],
                run_config['model'].get('kwargs') or {}, step, workdir, run_config, older)


def locate(path: str, *, step: int | None = None, best: bool = False) -> Source:
  """What `path` holds: a run workdir (its `step`, `best` or latest checkpoint), one checkpoint step
  of a run, or converted weights."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{path} does not exist; pass {PATH_FORMS}')
  parent = os.path.dirname(path)
  if os.path.basename(parent) == 'checkpoints' and os.path.basename(path).isdigit():
    if step is not None or best:
      raise ValueError(f'{path} is one checkpoint step already; drop --step/--best')
    return locate_run(os.path.dirname(parent), int(os.path.basename(path)))
  if os.path.isdir(os.path.join(path, 'checkpoints')) or os.path.exists(
      os.path.join(path, 'config.json')):
    return locate_run(path, step, best)
  try:
    meta = weights_lib.metadata(path)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f'{path} holds no checkpoint: pass {PATH_FORMS}') from e
  if step is not None or best:
    raise ValueError(f'{path} holds converted weights, which have no steps; drop --step/--best')
  kwargs = dict(meta['model_kwargs'])
  num_classes = kwargs.pop('num_classes', 1000)
  return Source(path, meta['model'], num_classes, models.get_info(meta['model']).input_size,
                kwargs, None, None, None)


def restore(source: Source, *, dtype=None) -> Network:
  """The network of `source` with `dtype` compute (None: the model's default), on this process's
  first local device (any device count may have written it)."""
  kwargs = {**source.model_kwargs, **({'dtype': dtype} if dtype is not None else {})}
  graphdef, abstract, rest = weights_lib.skeleton(source.name, num_classes=source.num_classes,
                                                  **kwargs)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  on_device = lambda tree: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  if source.workdir is None:
    with ocp.StandardCheckpointer() as checkpointer:
      state = checkpointer.restore(source.path, on_device(abstract))
    return Network(source, graphdef, state, rest)
  params, stats = abstract.split(nnx.Param, ...)

  def read(step):
    saved = manager.item_metadata(step)['state'].tree
    weights = {'params': params, 'model_state': stats}
    target = on_device({'ema': weights} if 'ema' in saved else weights)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))['state']

  with _run_manager(source.workdir) as manager:  # a damaged latest step: the previous one
    step, restored, _ = ckpt_lib.restore_newest((source.step, *source.older_steps), read,
                                                os.path.dirname(source.path))
  source = dataclasses.replace(source, path=os.path.join(os.path.dirname(source.path), str(step)),
                               step=step)
  restored = restored.get('ema', restored)
  return Network(source, graphdef, nnx.merge_state(restored['params'], restored['model_state']),
                 rest)
