"""The trainer end to end on digits: learning, NaN stop, fine-tuning from converted weights, gradient
accumulation, and failures before compiling (resume and device counts: tests/test_resume.py).

Runs go through tests/trainer_worker.py (train.py) in subprocesses, so that each can force its own
host device count; they share a persistent XLA compilation cache. The base run is the VGG recipe's
runlocal variant (vgg_tiny: BatchNorm, dropout, the plateau schedule; 32 px, batch 16).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cnn_jax import checkpoint, config as config_lib, trainer

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / 'tests' / 'trainer_worker.py'
VGG = 'configs/vgg.py:runlocal'


def start(cache, workdir, *args, devices=1, config=VGG):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, str(WORKER), f'--workdir={workdir}', f'--compilation_cache={cache}',
         f'--config={config}', '--config.log_every_steps=1', *args]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def finish(proc, expect_rc=0):
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == expect_rc, f'exit {proc.returncode}, expected {expect_rc}:\n{out[-4000:]}'
  return out


def run(cache, workdir, *args, expect_rc=0, **kwargs):
  return finish(start(cache, workdir, *args, **kwargs), expect_rc)


def records(workdir, split):
  with open(Path(workdir) / 'metrics.jsonl', encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.mark.slow
def test_loss_falls_and_accuracy_rises_on_digits(cache, tmp_path):
  run(cache, tmp_path, '--config.num_train_steps=80', '--config.eval_every_steps=80',
      '--config.log_every_steps=10', config='configs/quickstart.py:runlocal')  # resnet_tiny
  train = records(tmp_path, 'train')
  assert train[-1]['loss'] < 0.5 * train[0]['loss'], train
  assert train[-1]['top1'] > train[0]['top1'] + 0.3, train
  final = records(tmp_path, 'eval')[-1]
  assert final['top1'] > 0.6, final  # chance is 0.1
  assert final['top1'] <= final['top5']


@pytest.mark.slow
def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(cache, tmp_path):
  out = run(cache, tmp_path, '--config.num_train_steps=6', '--config.checkpoint_every_steps=1',
            '--config.eval_every_steps=-1', '--config.optimizer.lr=nan', expect_rc=1)
  assert 'NaN or inf at step 1' in out
  with pytest.raises(FileNotFoundError):  # nothing was saved after the bad update
    checkpoint.load_state(tmp_path)


@pytest.fixture(name='parse_runlocal')
def fixture_parse(parse_config):
  """Parse train.py-style --config flags of the quickstart runlocal recipe in-process."""
  return lambda *overrides: parse_config('configs/quickstart.py:runlocal', *overrides)


def test_unknown_key_and_wrong_type_fail_clearly(parse_runlocal):
  with pytest.raises(Exception, match='learning_rate'):
    parse_runlocal('--config.optimizer.learning_rate=0.1')
  with pytest.raises(Exception, match='batch_size'):
    parse_runlocal('--config.batch_size=many')
  config = parse_runlocal('--config.batch_size=32')
  config.unlock()
  config.batch_sise = 3
  with pytest.raises(ValueError, match="unknown config key 'batch_sise'"):
    config_lib.validate(config)


def test_image_too_small_for_the_model_fails_before_compiling(tmp_path, parse_runlocal):
  config = parse_runlocal('--config.model.name=alexnet2012_tiny', '--config.image_size=32')
  with pytest.raises(ValueError, match=r'image_size=32 is too small for alexnet2012_tiny.*67'):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


def test_workdir_of_another_model_is_refused(tmp_path, parse_runlocal):
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, identity={
      'model': 'vgg_tiny', 'num_classes': 10, 'image_size': 32})
  ckpt.manager.save(1, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardSave({'x': np.zeros(2)})),
      custom_metadata=ckpt.identity)
  ckpt.close()
  config = parse_runlocal('--config.num_train_steps=1')  # resnet_tiny
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match="model: checkpoint has 'vgg_tiny', this config has 'resnet_tiny'"):
    trainer.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_fine_tune_starts_from_converted_weights(tmp_path, parse_runlocal):
  """init_weights: every weight but the classifier (7 classes saved, 10 trained) comes from the file."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from cnn_jax import models  # pylint: disable=g-import-not-at-top
  from cnn_jax.convert import weights  # pylint: disable=g-import-not-at-top
  # Random weights of the right shapes for 7 classes, without compiling an initialiser.
  rng = np.random.default_rng(3)
  source = nnx.state(nnx.eval_shape(lambda: models.create('resnet_tiny', 7)), weights.WEIGHTS)
  source = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype), source)
  saved = dict(nnx.to_flat_state(nnx.filter_state(source, nnx.Param)))
  weights.save(str(tmp_path / 'weights'), 'resnet_tiny', source, {'num_classes': 7})
  # lr 0: the one training step leaves the parameters as they were loaded.
  config = parse_runlocal('--config.num_train_steps=1', '--config.optimizer.lr=0.0',
                  '--config.eval_every_steps=-1', f'--config.init_weights={tmp_path / "weights"}')
  trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  _, state, _ = checkpoint.load_state(str(tmp_path / 'run'))
  trained = {'.'.join(str(k.key) for k in path[:-1]): leaf for path, leaf in leaves(state['params'])}
  assert len(trained) == len(saved)
  for path, variable in saved.items():
    name = '.'.join(map(str, path))
    if name.startswith('fc.'):
      assert trained[name].shape[-1] == 10  # the classifier keeps its fresh initialisation
    else:
      np.testing.assert_array_equal(trained[name], variable.get_value(), err_msg=name)


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(parse_runlocal):
  """Without BatchNorm or dropout, 4 micro-batches of 4 give the update of one batch of 16."""
  from cnn_jax import parallel  # pylint: disable=g-import-not-at-top
  config = parse_runlocal('--config.model.name=alexnet2012_tiny', '--config.image_size=67',
                  '--config.optimizer.weight_decay=1e-3')
  config.unlock()
  config.model.kwargs.dropout = 0.0
  config.num_classes = 10
  rng = np.random.default_rng(0)
  batch = {'image': rng.standard_normal((16, 67, 67, 3), np.float32),
           'label': rng.integers(0, 10, 16).astype(np.int32), 'mask': np.ones(16, bool)}
  results = []
  for k in (1, 4):
    config.grad_accum_steps = k
    config.batch_size = 16
    step = trainer.train_step_fn(config)  # the trainer's own jitted step
    with jax.set_mesh(step.mesh):
      state, acc = step.fn(step.init(), step.new_acc(), parallel.global_batch(batch, step.mesh))
    results.append(jax.device_get((state['params'], acc)))
  (p1, a1), (p4, a4) = results
  for (path, x), (_, y) in zip(leaves(p1), leaves(p4), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  np.testing.assert_allclose(a1['loss'], a4['loss'], rtol=1e-5)
  assert a1['top1'] == a4['top1'] and a1['count'] == a4['count'] == 16
