"""Device mesh and shardings: the global batch is split over the 'data' axis of a ('data', 'model') mesh.

One `jax.jit` program runs on every device; XLA inserts the gradient all-reduce. BatchNorm statistics
are computed over the whole global batch (synchronised BN), because under jit the batch is one array.
Parameters and optimizer state are replicated, except where a model annotates a parameter with an
`out_sharding` (`nnx.with_partitioning` or `kernel_metadata`): AlexNet's two towers over 'model'
(cnn_jax/models/alexnet.py). `collectives` lists the communication of a compiled program per
mesh axis.
Several processes (hosts) join through `initialize_distributed()` (JAX's distributed runtime);
the mesh then spans the devices of all of them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np
from absl import flags, logging
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ('data', 'model')

# Multi-process start-up, shared by train.py and eval.py (flags defined once, here).
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Join a multi-process run with jax.distributed.initialize(). The coordinator, process count and '
    'process id come from the three flags below or, where unset, from the cluster environment JAX '
    'detects (SLURM, Open MPI, Kubernetes, Cloud TPU). Setting any of the three implies --distributed.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, which runs the coordination service; '
                                 'every process passes the same address.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1.')
_INIT_TIMEOUT = flags.DEFINE_integer(
    'distributed_init_timeout_s', 300, 'Give up when not all processes have joined after this long.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout_s', 100,
    'A process that has not been heard from for this long is declared dead, and the coordination '
    'service stops all the others with an error (instead of them waiting in a collective forever).')


def initialize_distributed() -> bool:
  """Start JAX's distributed runtime when the flags ask for it; True if it was started.

  Must run before anything touches a device. Afterwards `jax.devices()` lists the devices of every
  process, `jax.process_index()` is this process; on CPU, cross-process collectives go through gloo
  (jax's default `jax_cpu_collectives_implementation`).
  """
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not _DISTRIBUTED.value and all(v is None for v in explicit):
    return False
  try:
    jax.distributed.initialize(
        *explicit, initialization_timeout=_INIT_TIMEOUT.value,
        heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)
  except ValueError as e:  # e.g. "coordinator_address should be defined."
    raise ValueError(
        f'jax.distributed.initialize(): {e} Pass --coordinator_address=HOST:PORT '
        '--num_processes=N --process_id=I, or run under a cluster manager JAX detects '
        '(SLURM srun, Open MPI mpirun, Kubernetes).') from e
  logging.info('process %d of %d; %d local devices of %d', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def wait_for_all_processes(name: str) -> None:
  """Barrier over all processes through the coordination service (no device collective), with
  --distributed_init_timeout_s. Used after compiling: compile times differ between processes (one
  may hit the persistent cache, another not), and the first cross-process collective gives up after
  30 s (gloo's key-value wait) when a peer is that far behind."""
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    distributed.global_state.client.wait_at_barrier(name, _INIT_TIMEOUT.value * 1000)



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
  # Auto axes: jit's partitioner places intermediates; only inputs/outputs carry shardings.
  return jax.make_mesh(sizes, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over 'data', the rest replicated."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """Shardings for the train state: each parameter by its `out_sharding` metadata, and so are its
  optimizer-state and EMA copies (tree maps keep the metadata); everything else replicated."""
  specs = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the batch -> global arrays sharded over 'data' (any process count)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


_COLLECTIVE = re.compile(
    r'\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(')


def _ints(text: str | None) -> list[int]:
  return [int(i) for i in text.split(',')] if text else []


def _iota(dims: list[int], perm: list[int]) -> np.ndarray:
  ids = np.arange(math.prod(dims)).reshape(dims)
  return ids.transpose(perm) if perm else ids


def _device_groups(instruction: str, num_devices: int) -> list[list[int]]:
  """The device groups of one HLO collective, from any of XLA's three replica-group notations
  (explicit lists, iota `[G,S]<=[dims]T(perm)`, and Shardy's `mesh[...] {axes}`), or the moving
  pairs of a collective-permute."""
  if m := re.search(r'source_target_pairs=\{([\d,{}]*)\}', instruction):
    return [pair for pair in map(_ints, re.findall(r'\{(\d+,\d+)\}', m[1])) if pair[0] != pair[1]]
  if m := re.search(r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\(\[([\d,]+)\]"
                    r"(?:T\(([\d,]+)\))?\))? \{([^}]*)\}", instruction):
    names, sizes = zip(*((n, int(s)) for n, s in re.findall(r"'(\w+)'=(\d+)", m[1])))
    ids = (_iota(_ints(m[2]), _ints(m[3])) if m[2] else np.arange(math.prod(sizes))).reshape(sizes)
    over = [names.index(n) for n in re.findall(r"'(\w+)'", m[4])]
    rest = [i for i in range(len(sizes)) if i not in over]
    return ids.transpose(rest + over).reshape(-1, math.prod(sizes[i] for i in over)).tolist()
  if m := re.search(r'replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', instruction):
    return _iota(_ints(m[2]), _ints(m[3])).reshape(_ints(m[1])).tolist()
  if m := re.search(r'replica_groups=\{([\d,{}]*)\}', instruction):
    return [_ints(g) for g in re.findall(r'\{([\d,]*)\}', m[1]) if g] or [list(range(num_devices))]
  raise ValueError(f'cannot read the device groups of this HLO collective: {instruction[:300]}')


class Collective(NamedTuple):
  """One collective instruction: kind ('all-gather', ...), the mesh axes its device groups span
  ('model', 'data', 'data+model'; '' when it moves nothing), and its result shapes."""
  kind: str
  axes: str
  shapes: tuple[tuple[int, ...], ...]


def collectives(hlo_text: str, mesh: Mesh | jax.sharding.AbstractMesh) -> list[Collective]:
  """The collectives of a compiled SPMD program over `mesh`, in program order.

  `hlo_text`: `jax.jit(f).lower(...).compile().as_text()` or an XLA `*after_optimizations.txt`
  dump (partition p is the p-th device of `mesh` in row-major order). Each HLO instruction counts
  once: XLA combines many small all-reduces into one tuple-shaped instruction, and a loop body is not
  unrolled. `collections.Counter((c.kind, c.axes) for c in ...)` gives the counts per axis.
  """
  found = []
  for line in hlo_text.splitlines():
    if not (m := _COLLECTIVE.search(line)):
      continue
    axes = set()
    for group in _device_groups(line, math.prod(mesh.axis_sizes)):
      coords = np.array(np.unravel_index(group, mesh.axis_sizes))
      axes.update(name for name, c in zip(mesh.axis_names, coords) if len(set(c)) > 1)
    result_type = line[line.index('=') + 1:m.start()]
    shapes = tuple(tuple(_ints(d)) for d in re.findall(r'[a-z]+\d*\[([\d,]*)\]', result_type))
    found.append(Collective(m[1], '+'.join(a for a in mesh.axis_names if a in axes), shapes))
  return found
