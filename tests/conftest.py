"""Shared pytest set-up. Tests needing several devices run in subprocesses (see `start` in tests/test_trainer.py)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# Files whose every test is `slow` (out of `make test-fast`), each for its cost on a 2-core CPU;
# in the other files a test that takes tens of seconds carries @pytest.mark.slow itself.
SLOW_FILES = {
    'test_alexnet_split.py': 'subprocesses on 8 forced host devices',
    'test_configs.py': "traces every recipe's train and eval step (~40 s)",
    'test_convert.py': 'torchvision models built and compared weight for weight',
    'test_data_imagenet.py': "TensorFlow's import and the TFDS builder",
    'test_eval.py': 'short training runs, then eval.py',
    'test_faults_checkpoint.py': 'train.py subprocesses, interrupted and resumed',
    'test_faults_data.py': 'train.py subprocesses on corrupt data',
    'test_faults_user.py': 'train.py and convert subprocesses',
    'test_gpu_export.py': "every model's convolutions exported (~3 min)",
    'test_kernels.py': 'oneDNN convolution sweeps against XLA',
    'test_multihost.py': 'several processes joined by the distributed runtime',
    'test_resume.py': 'train.py subprocesses, stopped and resumed',
    'test_tools.py': 'the analysis tools compile and run tiny models',
    'test_trainer.py': 'train.py subprocesses',
}


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.name in SLOW_FILES:
      item.add_marker(pytest.mark.slow(reason=SLOW_FILES[item.path.name]))


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
