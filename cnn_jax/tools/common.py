"""Helpers shared by the tools: a headless pyplot, the machine's description, loading a model."""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import jax
from flax import nnx

from cnn_jax import evaluate


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


def load_model(path: str, *, step: int | None = None) -> Loaded:
  """A train.py workdir (its `step` or latest checkpoint; EMA parameters where the run keeps them),
  one of its checkpoints/<step> directories, or a weights directory from `cnn_jax.convert`: the
  checkpoints eval.py reads (`cnn_jax.evaluate.locate` / `restore`), on one device."""
  source = evaluate.locate(path, step=step)
  network = evaluate.restore(source)
  model = nnx.merge(network.graphdef, network.weights, network.rest)
  if source.workdir is None:
    description = f'{source.name} weights from {source.path}'
  else:
    description = f'{source.name} step {source.step} of {source.workdir}'
  return Loaded(model, source.name, source.num_classes, source.image_size,
                source.run_config['data'] if source.run_config else None, description)
