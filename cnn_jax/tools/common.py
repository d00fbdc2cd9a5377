"""Helpers shared by the tools: a headless pyplot, the machine's description, loading a model."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from cnn_jax import models
from cnn_jax.convert import weights


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def hardware() -> str:
  """One line naming what the numbers were measured on, e.g. for a table's caption."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    what = f'CPU: {_cpu_name()}, {cores} cores'
    if hasattr(os, 'sysconf') and 'SC_PHYS_PAGES' in os.sysconf_names:
      what += f', {os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30:.0f} GiB RAM'
  else:
    what = f'{jax.device_count()} x {device.device_kind}'
  return f'{what}; jax {jax.__version__}, {device.platform} backend'


@dataclasses.dataclass
class Loaded:
  """A model restored for inference, with what is known about how it was trained."""
  model: nnx.Module
  name: str
  num_classes: int
  image_size: int
  data: dict[str, Any] | None  # the run's data config (config.json), None for converted weights
  description: str  # what was loaded, for messages


def _restore_run(workdir: str, step: int | None) -> Loaded:
  """The model of a train.py workdir at `step` (default: the latest finished checkpoint).

  Reads only parameters (the EMA ones where the run keeps them, as its evaluation does) and
  BatchNorm statistics from the `state` item that cnn_jax.checkpoint writes, onto one device.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  manager = ocp.CheckpointManager(
      directory, item_names=('state',), item_handlers={'state': ocp.PyTreeCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f'no finished checkpoint{"" if step is None else f" at step {step}"} in '
                            f'{directory} (steps there: {list(manager.all_steps())})')
  identity = manager.metadata(step).custom_metadata or {}
  config_path = os.path.join(workdir, 'config.json')
  if 'model' not in identity or not os.path.exists(config_path):
    raise ValueError(f'{workdir} is not a train.py workdir: it needs config.json and checkpoints '
                     'whose metadata names the model')
  with open(config_path, encoding='utf-8') as f:
    config = json.load(f)
  name, num_classes = identity['model'], identity['num_classes']
  kwargs = config['model'].get('kwargs') or {}
  saved = manager.item_metadata(step)['state'].tree
  abstract = nnx.eval_shape(lambda: models.create(name, num_classes, **kwargs))
  _, params, _, model_state = nnx.split(abstract, nnx.Param, nnx.RngState, ...)
  params_key = 'ema' if 'ema' in saved else 'params'
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        {params_key: params, 'model_state': model_state})
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))['state']
  manager.close()
  state = nnx.merge_state(restored[params_key], restored['model_state'])
  model = weights.build_model(name, state, num_classes=num_classes, **kwargs)
  return Loaded(model, name, num_classes, identity['image_size'], config['data'],
                f'{name} step {step}{" (EMA parameters)" if params_key == "ema" else ""} of {workdir}')


def load_model(path: str, *, step: int | None = None) -> Loaded:
  """A train.py workdir (its `checkpoints/`) or a weights directory from `cnn_jax.convert`."""
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    return _restore_run(path, step)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{path} does not exist; pass a train.py --workdir or a weights '
                            'directory written by `python -m cnn_jax.convert`')
  meta = weights.metadata(path)  # raises a clear error for anything else
  if step is not None:
    raise ValueError(f'{path} holds converted weights, which have no steps; drop --step')
  model = weights.restore(path)
  info = models.get_info(meta['model'])
  num_classes = meta['model_kwargs'].get('num_classes', 1000)
  return Loaded(model, meta['model'], num_classes, info.input_size, None,
                f'{meta["model"]} weights from {meta.get("source") or path}')
