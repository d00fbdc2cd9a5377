"""Shared pytest set-up. Tests needing several devices run in subprocesses (see `start` in tests/test_trainer.py)."""

import os

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A persistent XLA compilation cache shared by the train.py subprocesses of one test module."""
  return tmp_path_factory.mktemp('xla_cache')
