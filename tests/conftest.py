"""Shared pytest set-up. Tests needing several devices run in subprocesses (see `start` in tests/test_trainer.py)."""

import os
import subprocess
import sys
import textwrap
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


@pytest.fixture(scope='session')
def run_on_host_devices():
  """`run_on_host_devices(script, devices=2)`: run a Python `script` (dedented) in a subprocess on
  `devices` forced host CPU devices, from the repository root; it must exit 0 and print OK."""
  root = Path(__file__).resolve().parents[1]

  def run(script: str, devices: int = 2) -> None:
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(script)], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
  return run


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
