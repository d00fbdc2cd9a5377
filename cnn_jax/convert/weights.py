"""Converted weights on disk: an Orbax checkpoint of a model's params and BatchNorm statistics.

`<dir>` is written by `orbax.checkpoint.StandardCheckpointer`; its custom metadata names the model
and the `models.create` options (num_classes, transform_input, aux heads...) needed to rebuild it,
and where the weights came from. It holds no optimizer state: it is a starting point, not a
training run to resume.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from flax import nnx

from cnn_jax import models

WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)


def save(directory: str, name: str, state: nnx.State, model_kwargs: Mapping[str, Any],
         source: str = '') -> str:
  """Write `state` (params and BatchNorm statistics of model `name`) to `directory`."""
  directory = os.path.abspath(directory)
  metadata = {'model': name, 'model_kwargs': dict(model_kwargs), 'source': source}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, state, custom_metadata=metadata)
  return directory


def metadata(directory: str) -> dict[str, Any]:
  """{'model': name, 'model_kwargs': {...}, 'source': ...} of a weights directory."""
  with ocp.StandardCheckpointer() as checkpointer:
    meta = checkpointer.metadata(os.path.abspath(directory)).custom_metadata or {}
  if 'model' not in meta:
    raise ValueError(f'{directory} is not a cnn_jax weights checkpoint (no model in its metadata); '
                     'write one with `python -m cnn_jax.convert`.')
  return meta


def build_model(name: str, state: nnx.State, *, seed: int = 0, **kwargs) -> nnx.Module:
  """`models.create(name, seed=seed, **kwargs)` holding `state`'s weights, without initialising them.

  Only the rest (dropout RNG streams) is created, under jit, where the random init of the weights
  is dead code: eager initialisation takes minutes for the big models on a CPU.
  """
  create = lambda: models.create(name, seed=seed, **kwargs)
  graphdef = nnx.graphdef(nnx.eval_shape(create))
  rest = jax.jit(lambda: nnx.state(create(), nnx.Not(WEIGHTS)))()
  return nnx.merge(graphdef, state, rest)


def restore(directory: str, **kwargs) -> nnx.Module:
  """The model saved in `directory`; `kwargs` (e.g. dtype, seed) are passed to `models.create`."""
  meta = metadata(directory)
  kwargs = {**meta['model_kwargs'], **kwargs}
  abstract = nnx.eval_shape(lambda: models.create(meta['model'], **kwargs))
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(os.path.abspath(directory), nnx.state(abstract, WEIGHTS))
  return build_model(meta['model'], state, **kwargs)
