"""Checkpoint faults: an unwritable or full checkpoints directory stops the run with the path and
the cause instead of hanging; a damaged or incomplete latest checkpoint falls back to the previous
good one (train.py and eval.py), keeping every file; a resume with another model, optimizer or
schedule is refused naming the field, before the workdir's config.json is touched; metrics.jsonl
keeps one row per (split, step) across a resume.

The runs are resnet_tiny on the embedded digits (configs/quickstart.py:runlocal). Every subprocess
has a timeout, so that a save that hangs fails the test instead of the suite.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from cnn_jax import checkpoint, metrics, trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG = 'configs/quickstart.py:runlocal'  # resnet_tiny, SGD with momentum, warmup_cosine
# Seconds. A save that used to hang fails within 10 s now (before compiling); the runs that train
# take 10-30 s alone on 2 CPU cores, longer on a busy machine.
HANG_TIMEOUT, RUN_TIMEOUT = 120, 600


def _run(args, cache, prefix=(), timeout=RUN_TIMEOUT, launcher=()):
  """A command-line tool of this repository in a subprocess: (exit code, stdout + stderr)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  if launcher:  # `python -c <launcher> <the tool's arguments>`
    args = [*launcher, *args[1:]]
  proc = subprocess.run([*prefix, sys.executable, *args, f'--compilation_cache={cache}'], cwd=REPO,
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=timeout, check=False)
  return proc.returncode, proc.stdout


def _train(workdir, cache, *args, **kwargs):
  return _run(['train.py', f'--config={CONFIG}', f'--workdir={workdir}',
               '--config.checkpoint_every_steps=2', '--config.eval_every_steps=2',
               '--config.log_every_steps=1', '--config.keep_checkpoints=3', *args], cache, **kwargs)


def _read_only_prefix():
  """A command prefix under which a read-only directory cannot be written: root ignores the mode
  bits unless it drops CAP_DAC_OVERRIDE (setpriv, util-linux)."""
  if os.geteuid() != 0:
    return []
  setpriv = shutil.which('setpriv')
  if setpriv is None:
    pytest.skip('running as root without setpriv: a read-only directory stays writable')
  return [setpriv, '--bounding-set=-dac_override,-dac_read_search']


def _files(directory):
  """{relative path: size} of every file under `directory`."""
  return {str(p.relative_to(directory)): p.stat().st_size
          for p in Path(directory).rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def trained(cache, tmp_path_factory):
  """A finished 6-step run with checkpoints at steps 2, 4 and 6. Tests work on copies of it."""
  workdir = tmp_path_factory.mktemp('trained')
  rc, out = _train(workdir, cache, '--config.num_train_steps=6')
  assert rc == 0, out[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4', '6']
  return workdir


def _copy(trained, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _damage(workdir, truncated=(4,), every_file=False):
  """Step 6 incomplete (Orbax's commit markers gone), the largest file of the `truncated` steps cut
  to 1000 bytes; `every_file`: each of their data files cut to half (which file holds which
  arrays varies between runs, and eval reads only the weights)."""
  for marker in checkpoint.COMMIT_MARKERS:
    os.remove(workdir / 'checkpoints' / '6' / marker)
  for step in truncated:
    data = workdir / 'checkpoints' / str(step) / 'state' / 'ocdbt.process_0' / 'd'
    if every_file:
      for path in data.iterdir():
        os.truncate(path, path.stat().st_size // 2)
    else:
      os.truncate(max(data.iterdir(), key=lambda p: p.stat().st_size), 1000)


# ----------------------------------------------------------------------------- saving


def test_unwritable_checkpoints_directory_stops_at_once_with_path_and_cause(cache, tmp_path):
  """The old code blocked forever in the first save (Orbax waited for a directory that could not be
  created); here the run fails before compiling."""
  prefix = _read_only_prefix()
  directory = tmp_path / 'run' / 'checkpoints'
  directory.mkdir(parents=True)
  directory.chmod(0o555)
  rc, out = _train(tmp_path / 'run', cache, '--config.num_train_steps=2', prefix=prefix,
                   timeout=HANG_TIMEOUT)
  assert rc == 2, out[-3000:]  # cnn_jax.errors: a user error, one line
  assert f'error: cannot write checkpoints to {directory}: Permission denied' in out


_SAVE_SCRIPT = textwrap.dedent('''
    import os, resource, signal, sys, time
    import grain, numpy as np
    from cnn_jax import checkpoint
    mode, workdir = sys.argv[1:]
    ckpt = checkpoint.Checkpointer(workdir, keep=2, identity={'model': 'm'})
    iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
    big = {'x': np.random.default_rng(0).random(1_000_000, np.float32)}  # 4 MB, incompressible
    try:
      if mode == 'read_only':  # becomes read-only after the run started
        os.chmod(os.path.join(workdir, 'checkpoints'), 0o555)
        ckpt.save(1, big, iterator)
      else:  # "disk full": no file may grow past 100 kB (the write fails with EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        ckpt.save(1, big, iterator)  # asynchronous: returns before the write fails
        print('save returned', flush=True)
        if mode == 'next_check':  # what the trainer does after each step; never blocks
          for _ in range(600):
            ckpt.check()
            time.sleep(0.1)
        elif mode == 'next_save':
          ckpt.save(2, {'x': np.zeros(2, np.float32)}, iterator)
        else:
          ckpt.wait()  # what the trainer does at exit
      print('no error')
    except checkpoint.CheckpointSaveError as e:
      print('CheckpointSaveError:', e)
''')


@pytest.mark.parametrize('mode', ['read_only', 'next_check', 'next_save', 'at_exit'])
def test_failed_save_raises_naming_step_path_and_cause(mode, tmp_path):
  """read_only: the old code hung (killed by the timeout); next_check / next_save / at_exit: an
  asynchronous write that fails surfaces as CheckpointSaveError for that step, not Orbax's bare
  ValueError (the old code had no `check`)."""
  prefix = _read_only_prefix() if mode == 'read_only' else []
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  proc = subprocess.run([*prefix, sys.executable, '-c', _SAVE_SCRIPT, mode, str(tmp_path)],
                        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=HANG_TIMEOUT, check=False)
  out = proc.stdout
  directory = tmp_path / 'checkpoints'
  assert f'CheckpointSaveError: saving checkpoint step 1 to {directory} failed' in out, out[-3000:]
  cause = 'Permission denied' if mode == 'read_only' else 'File too large'  # EACCES / EFBIG
  assert cause in out.split('CheckpointSaveError:')[1]
  if mode != 'read_only':
    assert 'save returned' in out
  assert not (directory / '1').exists()


def test_disk_full_stops_training_with_the_step_and_the_cause(cache, tmp_path):
  """train.py with no file allowed past 200 kB (as on a full disk or quota): the step-2 checkpoint
  (600 kB) fails in the background and the run stops with exit code 2 before step 5, naming it.
  The old code went on training and failed later with Orbax's ValueError and a traceback."""
  launcher = textwrap.dedent(f'''
      import resource, runpy, signal, sys
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
      sys.argv = ['train.py', *sys.argv[1:]]
      runpy.run_path('train.py', run_name='__main__')
  ''')
  rc, out = _train(tmp_path, cache, '--config.num_train_steps=6', launcher=('-c', launcher))
  directory = tmp_path / 'checkpoints'
  assert rc == 2, out[-3000:]
  error = out[out.index('error: '):]
  assert error.startswith(f'error: saving checkpoint step 2 to {directory} failed') and (
      'File too large' in error), error  # EFBIG, the error RLIMIT_FSIZE gives
  assert '] step 5:' not in out  # stopped at the first step or save after the failure
  assert not (directory / '2').exists()


# ----------------------------------------------------------------------------- resuming


def test_damaged_and_incomplete_steps_fall_back_to_the_previous_good_one(trained, cache, tmp_path):
  """The old code refused the incomplete step 6 as "a different run" (advising to delete the whole
  directory) and, without it, failed on the truncated step 4 with hundreds of traceback lines."""
  workdir = _copy(trained, tmp_path)
  _damage(workdir)
  before = _files(workdir / 'checkpoints')
  rc, out = _train(workdir, cache)  # 6 steps again
  assert rc == 0, out[-3000:]
  directory = workdir / 'checkpoints'
  assert f'checkpoint step 6 in {directory} is incomplete (no _CHECKPOINT_METADATA' in out
  assert f'checkpoint step 4 in {directory} is damaged and cannot be read (ValueError' in out
  assert 'not valid for value of size 1000' in out  # the cause: the truncated file
  assert f'using checkpoint step 2 of {directory} instead of the damaged step(s) 4' in out
  assert f'resumed from {directory} at step 2' in out
  # Nothing was deleted: the bad steps were set aside with every file, and 4 and 6 saved anew.
  after = _files(directory)
  for path, size in before.items():
    step, rest = path.split('/', 1)
    moved = {'4': '4.damaged', '6': '6.incomplete'}.get(step, step)
    assert after.get(f'{moved}/{rest}') == size, path
  assert sorted(os.listdir(directory)) == ['2', '4', '4.damaged', '6', '6.incomplete']
  # One row per (split, step): steps 3-6, replayed since step 2, were logged twice by the old code.
  rows = [(r['split'], r['step']) for r in map(json.loads, open(workdir / 'metrics.jsonl'))]
  expected = [('train', s) for s in range(1, 7)] + [('eval', s) for s in (2, 4, 6)]
  assert sorted(rows) == sorted(expected)


def test_no_readable_checkpoint_stops_and_moves_nothing(trained, cache, tmp_path):
  """Every step damaged: no silent restart from step 0 (which would go on to overwrite them)."""
  workdir = _copy(trained, tmp_path)
  _damage(workdir, truncated=(2, 4))
  before = _files(workdir)
  rc, out = _train(workdir, cache)
  assert rc == 2, out[-3000:]
  assert re.search(rf'error: no checkpoint in {workdir / "checkpoints"} can be read \(step 4: '
                   r'ValueError: .*; step 2: ValueError: .*\)', out), out[-3000:]
  assert _files(workdir) == before


def test_eval_falls_back_from_a_damaged_latest_checkpoint(trained, cache, tmp_path):
  workdir = _copy(trained, tmp_path)
  _damage(workdir, every_file=True)
  before = _files(workdir / 'checkpoints')
  rc, out = _run(['eval.py', f'--workdir={workdir}', '--noprogress'], cache)
  assert rc == 0, out[-3000:]
  assert 'step 6' in out and 'is incomplete' in out
  assert f'checkpoint step 4 in {workdir / "checkpoints"} is damaged' in out
  assert 'resnet_tiny @ step 2 |' in out
  with open(workdir / 'results.jsonl', encoding='utf-8') as f:
    row = json.loads(f.readline())
  assert row['step'] == 2 and row['checkpoint'] == str(workdir / 'checkpoints' / '2')
  assert _files(workdir / 'checkpoints') == before  # eval moves nothing


RMSPROP = ('--config.optimizer.name=rmsprop', '--config.optimizer.rmsprop_decay=0.9',
           '--config.optimizer.eps=1.0')  # the fields RMSProp requires (config.validate)


@pytest.mark.parametrize('overrides, message', [
    (RMSPROP, "optimizer.name: checkpoint has 'sgd', this config has 'rmsprop'"),
    (('--config.schedule.name=plateau', '--config.schedule.factor=0.1',
      '--config.schedule.patience=1', '--config.schedule.max_reductions=3'),
     "schedule.name: checkpoint has 'warmup_cosine', this config has 'plateau'"),
    (('--config.ema_decay=0.999',), 'ema_decay: checkpoint has 0.0, this config has 0.999'),
])
def test_resume_with_another_state_layout_names_the_field_and_the_ways_out(
    trained, tmp_path, overrides, message, parse_config):
  """The old code failed inside Orbax with a tree mismatch suggesting a setting train.py lacks."""
  workdir = _copy(trained, tmp_path)
  saved_config = (workdir / 'config.json').read_bytes()
  with pytest.raises(checkpoint.IncompatibleCheckpointError) as e:
    trainer.train_and_evaluate(parse_config(CONFIG, *overrides, '--config.num_train_steps=8'),
                               str(workdir))
  text = str(e.value)
  assert message in text
  assert f'{workdir / "config.json"}' in text
  assert f'--config.init_weights={workdir / "checkpoints" / "6"}' in text
  assert (workdir / 'config.json').read_bytes() == saved_config


def test_the_way_out_starts_a_new_run_from_the_refused_checkpoint(trained, tmp_path, parse_config):
  """--config.init_weights=<step directory> (the error's advice) starts an RMSProp run from the SGD
  run's weights. Learning rate 0: every update is 0 x (something finite), so the weights after one
  step are exactly the step-6 weights (the BatchNorm statistics do move, in train mode)."""
  step6 = trained / 'checkpoints' / '6'
  trainer.train_and_evaluate(parse_config(
      CONFIG, *RMSPROP, '--config.optimizer.lr=0', '--config.num_train_steps=1',
      '--config.eval_every_steps=-1', '--config.checkpoint_every_steps=1',
      f'--config.init_weights={step6}'), str(tmp_path / 'new'))
  _, new, _ = checkpoint.load_state(tmp_path / 'new')
  _, old, _ = checkpoint.load_state(trained, 6)
  assert 'inner_state' in new['opt_state'] and new['step'] == 1  # the new run's own optimizer
  flat_old = dict(jax.tree_util.tree_flatten_with_path(old['params'])[0])
  for path, x in jax.tree_util.tree_flatten_with_path(new['params'])[0]:
    np.testing.assert_array_equal(x, flat_old[path], err_msg=jax.tree_util.keystr(path))


def test_refused_resume_of_another_model_leaves_config_json(trained, tmp_path, parse_config):
  """The old code wrote the new config.json before refusing, so eval.py --workdir then read the old
  checkpoint with the new model's preprocessing."""
  workdir = _copy(trained, tmp_path)
  before = {p: (workdir / p).read_bytes() for p in _files(workdir)}
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match="model: checkpoint has 'resnet_tiny', this config has 'vgg_tiny'"):
    trainer.train_and_evaluate(parse_config(CONFIG, '--config.model.name=vgg_tiny'), str(workdir))
  assert {p: (workdir / p).read_bytes() for p in _files(workdir)} == before  # nothing written


# ----------------------------------------------------------------------------- metrics.jsonl


def test_writer_keeps_one_row_per_split_and_step(tmp_path):
  """Rows after the resumed step are dropped; a step written again replaces its row."""
  rows = [{'step': 1, 'split': 'train', 'loss': 2.0}, {'step': 2, 'split': 'train', 'loss': 1.5},
          {'step': 2, 'split': 'eval', 'loss': 1.7}, {'step': 3, 'split': 'train', 'loss': 1.2}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  writer = metrics.Writer(str(tmp_path), start_step=2)  # resumed from the step-2 checkpoint
  writer.write(3, 'train', {'loss': 1.25})  # the replayed step 3
  writer.write(2, 'eval', {'loss': 1.6})  # step 2 evaluated again
  writer.close()
  got = [(r['split'], r['step'], r['loss'])
         for r in map(json.loads, open(tmp_path / 'metrics.jsonl', encoding='utf-8'))]
  assert got == [('train', 1, 2.0), ('train', 2, 1.5), ('train', 3, 1.25), ('eval', 2, 1.6)]
