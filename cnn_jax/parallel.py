"""Device mesh and shardings: the global batch is split over the 'data' axis of a ('data', 'model') mesh.

One `jax.jit` program runs on every device; XLA inserts the gradient all-reduce. BatchNorm statistics
are computed over the whole global batch (synchronised BN), because under jit the batch is one array.
Parameters and optimizer state are replicated; `state_shardings` is the place for per-parameter rules
(e.g. AlexNet's two towers over 'model').
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ('data', 'model')


def mesh_axis_sizes(mesh_shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolve {'data': -1, 'model': 1} against `num_devices` (-1 = all the devices left)."""
  unknown = set(mesh_shape) - set(AXES)
  if unknown:
    raise ValueError(f'mesh_shape has unknown axes {sorted(unknown)}; the axes are {AXES}')
  sizes = [int(mesh_shape.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh_shape {dict(mesh_shape)}: at most one axis may be -1')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'mesh_shape {dict(mesh_shape)} does not divide {num_devices} devices')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f'mesh_shape {dict(mesh_shape)} needs {math.prod(sizes)} devices, but {num_devices} are '
        f'visible; use -1 for "the rest", e.g. {{"data": -1, "model": 1}}')
  return tuple(sizes)


def make_mesh(mesh_shape: Mapping[str, int], devices=None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  sizes = mesh_axis_sizes(mesh_shape, len(devices))
  return jax.make_mesh(sizes, AXES, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over 'data', the rest replicated."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """Shardings for the train state (params, optimizer state, ...): replicated."""
  return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the batch -> global arrays sharded over 'data' (any process count)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
