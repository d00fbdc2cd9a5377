"""Keep freed host memory in the process: the large buffers of a CPU training step are reused.

glibc's malloc serves each buffer over 32 MB with a fresh `mmap` and unmaps it when it is freed,
so every step of XLA:CPU (and of PyTorch) faults its large temporaries in again, 4 KiB at a time,
zero-filled by the kernel: a ResNet-50 float32 step at batch 16 faults 360,000 pages (1.4 GB), and
in a virtual machine that hands freed memory back to its host (free page reporting) the faults
after a pause cost more still. `keep_freed_memory()` sets glibc's `mallopt` so that every thread
allocates from the one main heap (M_ARENA_MAX 1: a thread's own arena maps large buffers whatever
the settings), never from `mmap` (M_MMAP_MAX 0), and the heap is never trimmed (M_TRIM_THRESHOLD
max): freed buffers stay mapped and the next step reuses them. The price is memory: the process
keeps its peak, about 1.5x the default's (ResNet-50 fp32, batch 16: 3.7 GB against 2.4 GB;
jemalloc told to retain memory keeps as much).

train.py, eval.py, the tour and the benchmarks call it first. It must run before JAX starts its
CPU client (the client's threads pick their malloc arena when they start). `CNN_JAX_KEEP_MEMORY=0`
turns it off; it does nothing off Linux/glibc or when another malloc is preloaded (LD_PRELOAD).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

OPT_OUT = 'CNN_JAX_KEEP_MEMORY'
# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: SIZE_MAX, never trim

_kept = False


def skip_reason() -> str | None:
  """Why `keep_freed_memory()` leaves malloc as it is, or None."""
  if os.environ.get(OPT_OUT) == '0':
    return f'{OPT_OUT}=0'
  if sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc':
    return 'not Linux with glibc'
  if os.environ.get('LD_PRELOAD'):
    return 'LD_PRELOAD is set (another malloc?)'
  return None


def keep_freed_memory() -> bool:
  """Set glibc's malloc to keep freed memory (module doc) unless `skip_reason()`; True if set."""
  global _kept
  if not _kept and skip_reason() is None:
    libc = ctypes.CDLL('libc.so.6')
    _kept = all(libc.mallopt(option, value) == 1 for option, value in SETTINGS)
  return _kept


def describe() -> str:
  """The malloc this process runs with, for benchmark headers."""
  if 'jemalloc' in os.environ.get('LD_PRELOAD', ''):
    return 'jemalloc (LD_PRELOAD)'
  if _kept:
    return 'glibc, freed memory kept (cnn_jax.host_memory)'
  return f'glibc default ({skip_reason() or "keep_freed_memory() not called"})'
