"""Shared pytest set-up. Tests needing several devices run in subprocesses (see `start` in tests/test_trainer.py)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A persistent XLA compilation cache shared by the train.py subprocesses of one test module."""
  return tmp_path_factory.mktemp('xla_cache')


@pytest.fixture(scope='session')
def parse_config():
  """`parse_config(recipe, *overrides)`: the config train.py would get from `--config=<recipe>` and
  `--config.x=y` overrides, parsed in-process (no subprocess, no compile)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  repo = Path(__file__).resolve().parents[1]

  def parse(recipe, *overrides):
    argv = ['train.py', f'--config={repo}/{recipe}', *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=values, sys_argv=argv)
    values(argv)
    return values.config
  return parse
