"""Helpers shared by the tools: a headless pyplot and the machine's description."""

from __future__ import annotations

import os
import platform

import jax


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
