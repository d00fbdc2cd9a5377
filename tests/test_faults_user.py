"""User mistakes end as one line `error: <problem and fix>` with exit code 2 and no traceback.

Each case runs the real command (train.py, `python -m cnn_jax.convert`) in a subprocess; all of them
fail before anything is compiled, in a few seconds. The expected key names, file names and fixes in
the assertions are the config's real fields and the paths the test passed, written out by hand.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = 'configs/quickstart.py:runlocal'  # resnet_tiny on digits


def run_cli(*args, devices=1, timeout=120):
  """`python *args` in the repository, on `devices` CPU devices; a hang fails after `timeout` s."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def one_line_error(out, *words, code=2):
  """The last non-empty stderr line, checked: `error: ...` holding every word; no traceback."""
  output = out.stdout + out.stderr
  assert out.returncode == code, f'exit {out.returncode}:\n{output[-3000:]}'
  assert 'Traceback' not in output, output[-3000:]
  last = [line for line in out.stderr.splitlines() if line.strip()][-1]
  assert last.startswith('error: '), output[-3000:]
  for word in words:
    assert word in last, (word, last)
  return last


def train(tmp_path, *args, **kwargs):
  return run_cli('train.py', f'--workdir={tmp_path / "run"}', '--compilation_cache=', *args,
                 **kwargs)


def test_missing_config_file(tmp_path):
  out = train(tmp_path, '--config=configs/no_such_recipe.py')
  one_line_error(out, 'configs/no_such_recipe.py', 'not found', '--config=configs/')


@pytest.mark.parametrize('override, nearest', [
    ('--config.lernrate=0.1', '--config.optimizer.lr'),  # the example: by meaning
    ('--config.batchsize=8', '--config.batch_size'),
    ('--config.data.skip_currupt=True', '--config.data.skip_corrupt'),
])
def test_unknown_config_key_names_the_nearest(tmp_path, override, nearest):
  out = train(tmp_path, f'--config={QUICK}', override)
  one_line_error(out, 'unknown config key', override.split('=')[0], f'did you mean {nearest}')


def test_unknown_recipe_argument(tmp_path):
  out = train(tmp_path, '--config=configs/resnet.py:dept=50')
  one_line_error(out, "unknown config argument 'dept'", 'depth')


@pytest.mark.parametrize('args, words', [
    (['--config.batch_size=0'], ['batch_size=0', '--config.batch_size', 'positive']),
    (['--config.eval_batch_size=-1'], ['eval_batch_size=-1', 'positive']),
    (['--config.model.name=resnet_huge'], ["unknown model 'resnet_huge'", 'resnet_tiny']),
    # vgg_tiny keeps VGG's five 2x2 max-pools: 2^5 = 32 px at least (Simonyan & Zisserman, Table 1)
    (['--config=configs/vgg.py:runlocal', '--config.image_size=8'],
     ['image_size=8', 'at least 32x32', '--config.image_size >= 32']),
], ids=['batch_size_0', 'eval_batch_size_negative', 'unknown_model', 'image_too_small'])
def test_bad_config_values(tmp_path, args, words):
  config = [] if args[0].startswith('--config=') else [f'--config={QUICK}']
  one_line_error(train(tmp_path, *config, *args), *words)


def test_batch_not_divisible_by_devices(tmp_path):
  out = train(tmp_path, f'--config={QUICK}', '--config.batch_size=15', devices=2)
  one_line_error(out, 'batch_size=15', 'multiple of the data-parallel size 2')


def test_dataset_not_prepared(tmp_path):
  out = train(tmp_path, f'--config={QUICK}', '--config.data.name=imagenet2012',
              f'--config.data.data_dir={tmp_path / "tfds"}')
  one_line_error(out, "'imagenet2012' is not prepared", str(tmp_path / 'tfds'),
                 'python -m cnn_jax.data.prepare imagenet2012 --manual_dir=')


def test_workdir_is_a_file(tmp_path):
  workdir = tmp_path / 'notes.txt'
  workdir.write_text('not a run')
  out = run_cli('train.py', f'--config={QUICK}', f'--workdir={workdir}', '--compilation_cache=')
  one_line_error(out, str(workdir), 'is a file', 'pass a directory')


def test_verbose_shows_the_traceback(tmp_path):
  out = train(tmp_path, f'--config={QUICK}', '--config.batch_size=0', '--verbose')
  assert out.returncode != 0
  assert 'Traceback' in out.stderr and 'ValueError: batch_size=0' in out.stderr


@pytest.fixture(scope='module')
def torch_files(tmp_path_factory):
  torch = pytest.importorskip('torch')
  root = tmp_path_factory.mktemp('pth')
  torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), root / 'whole_model.pth')
  torch.save([1, 2], root / 'list.pth')
  return root


@pytest.mark.parametrize('name', ['whole_model.pth', 'list.pth'])
def test_torch_file_without_a_state_dict(torch_files, tmp_path, name):
  out = run_cli('-m', 'cnn_jax.convert', 'torchvision', '--model=resnet18',
                f'--weights={torch_files / name}', f'--out={tmp_path / "out"}')
  one_line_error(out, str(torch_files / name), '`torch.save(model.state_dict(), path)`')
  # torch's own advice (load with weights_only=False) runs code from the file: never given.
  assert 'weights_only' not in out.stdout + out.stderr
  assert not (tmp_path / 'out').exists()
