"""Converted weights on disk: an Orbax checkpoint of a model's params and BatchNorm statistics.

`<dir>` is written by `orbax.checkpoint.StandardCheckpointer`; its custom metadata names the model
and the `models.create` options (num_classes, transform_input, aux heads...) needed to rebuild it,
and where the weights came from. It holds no optimizer state: it is a starting point, not a
training run to resume.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple

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


class Skeleton(NamedTuple):
  """A model without its weights: `nnx.merge(graphdef, weights, rest)` rebuilds it."""

  graphdef: nnx.GraphDef
  weights: nnx.State  # ShapeDtypeStructs of the params and BatchNorm statistics
  rest: nnx.State  # concrete: the dropout RNG streams as `models.create` makes them


def skeleton(name: str, *, seed: int = 0, **kwargs) -> Skeleton:
  """`models.create(name, seed=seed, **kwargs)` traced once, its weights never initialised.

  Under jit the random init of the weights is dead code: only the RNG streams are computed.
  (Eager init costs minutes for the big models on a CPU, and tracing is the slow part here.)
  """
  traced = []

  def create_rest():
    graphdef, weights, rest = nnx.split(models.create(name, seed=seed, **kwargs), WEIGHTS, ...)
    # Static structure and shapes, recorded while tracing.
    traced.append((graphdef, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                          weights)))
    return rest

  rest = jax.jit(create_rest)()
  return Skeleton(*traced[0], rest)


def copy_into(model: nnx.Module, weights: nnx.State, what: str, *,
              keep_mismatched: bool = False) -> list[str]:
  """Copy `weights` (e.g. `load.restore(...).weights`) into `model`, to fine-tune from them.

  Weights whose shape differs (the classifier, when fine-tuning to another number of classes)
  raise a ValueError naming them (`what` names the weights), or with `keep_mismatched` keep
  `model`'s own initialisation; their names are returned. A weight of `model` missing from
  `weights` always raises.
  """
  ours = dict(nnx.to_flat_state(nnx.state(model, WEIGHTS)))
  theirs = dict(nnx.to_flat_state(weights.filter(WEIGHTS)))
  name = lambda path: '.'.join(map(str, path))
  missing = [name(p) for p in ours if p not in theirs]
  mismatched = [f'{name(p)} {theirs[p].shape} -> {v.shape}' for p, v in ours.items()
                if p in theirs and theirs[p].shape != v.shape]
  if missing or (mismatched and not keep_mismatched):
    raise ValueError(
        f'{what} do not fit {getattr(model, "name", "model")}: '
        f'missing {", ".join(missing) or "-"}; different shapes {"; ".join(mismatched) or "-"}. '
        'Use the same model, and keep_mismatched=True to re-initialise a classifier of another '
        'class count.')
  nnx.update(model, nnx.from_flat_state(
      [(p, theirs[p]) for p, v in ours.items() if theirs[p].shape == v.shape]))
  return [m.split(' ')[0] for m in mismatched]
