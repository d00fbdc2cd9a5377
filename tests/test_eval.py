"""eval.py / cnn_jax.evaluate on a short training run on digits: equal to a direct computation and to
the trainer's own validation, every example counted once, 10-crop, ensembles, converted weights,
--best, and the clear errors.

The direct computations read the checkpoints' arrays with Orbax's own API (not through cnn_jax's
checkpoint, evaluate or tools loaders), put them into a freshly built resnet_tiny, run it eagerly on
the whole split in one batch and count top-k with numpy.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from cnn_jax import checkpoint, data, evaluate, load, models, trainer
from cnn_jax.convert import weights
from configs import quickstart

REPO = Path(__file__).resolve().parents[1]
SPLIT_SIZE = 360  # digits' test split: the last 20 % of 1,797 images


def _config():
  c = quickstart.get_config('runlocal')  # resnet_tiny on digits
  c.image_size = 16
  c.batch_size = 64
  c.num_train_steps = 30  # ~75 % top-1
  c.eval_every_steps = c.checkpoint_every_steps = 15
  c.log_every_steps = 15
  c.keep_checkpoints = 2
  return c


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 30-step run with checkpoints (and validation) at steps 15 and 30: (workdir, config)."""
  workdir = tmp_path_factory.mktemp('run')
  config = _config()
  trainer.train_and_evaluate(config, str(workdir))
  return workdir, config


def _split(config, ten_crop=False):
  """The whole eval split in one batch, as the eval transform makes it."""
  batch = next(data.make_loader(config.data, config.data.eval_split, train=False,
                                global_batch_size=SPLIT_SIZE, seed=0,
                                image_size=config.image_size, model_name=config.model.name,
                                ten_crop=ten_crop))
  assert batch['mask'].all()
  return batch['image'], batch['label']


def _saved(workdir, step):
  """The arrays of checkpoint `step`, read with Orbax directly: {'params': ..., 'model_state': ...},
  each Variable stored as {'value': array}."""
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.restore(workdir / 'checkpoints' / str(step) / 'state')
  assert 'ema' not in saved  # the run keeps no moving average: its raw parameters are evaluated
  return saved


def _pure(tree):
  """Orbax's {'value': array} Variable leaves -> plain arrays."""
  if isinstance(tree, dict):
    return tree['value'] if set(tree) == {'value'} else {k: _pure(v) for k, v in tree.items()}
  return tree


def _model(workdir, step):
  """A new resnet_tiny (10 classes) holding the parameters and BatchNorm statistics of `step`."""
  saved = _saved(workdir, step)
  model = models.create('resnet_tiny', 10, rngs=nnx.Rngs(jax.random.key(0, impl='rbg')))
  graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  nnx.replace_by_pure_dict(params, _pure(saved['params']))
  nnx.replace_by_pure_dict(batch_stats, _pure(saved['model_state']))
  return nnx.merge(graphdef, params, batch_stats, rest)


def _probs(workdir, step, images):
  """Softmax of the model of checkpoint `step`, eagerly; averaged over the views of (N, 10, H, W, 3)
  images."""
  model = _model(workdir, step)
  views = images.reshape(-1, *images.shape[-3:])
  p = np.asarray(nnx.softmax(model(views, train=False)), np.float64)
  return p.reshape(*images.shape[:-3], -1).mean(axis=1) if images.ndim == 5 else p


def _expected(p, labels):
  """top1, top5, mean NLL of probabilities p (N, C)."""
  top5 = np.argsort(-p, axis=1)[:, :5]
  return ((top5[:, 0] == labels).mean(), (top5 == labels[:, None]).any(axis=1).mean(),
          -np.log(p[np.arange(len(labels)), labels]).mean())


def _eval_records(workdir):
  with open(workdir / 'metrics.jsonl', encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == 'eval']


@pytest.mark.slow
def test_latest_checkpoint_equals_direct_computation_and_trainer(run):
  workdir, config = run
  # 7 does not divide the 360 test images: the last batch is padded and masked.
  row = evaluate.run(workdir=str(workdir), batch_size=7, progress=False)
  assert row['n'] == SPLIT_SIZE == data.num_examples(config.data, 'test')
  images, labels = _split(config)
  top1, top5, loss = _expected(_probs(workdir, 30, images), labels)
  assert (row['top1'], row['top5']) == (top1, top5)
  assert row['loss'] == pytest.approx(loss, rel=1e-5)
  trained = _eval_records(workdir)[-1]  # the trainer's own validation of step 30 (batch 128)
  assert trained['step'] == 30
  assert (row['top1'], row['top5']) == (trained['top1'], trained['top5'])
  assert top1 > 0.3  # it learnt something (chance: 0.1), so the comparison means something
  saved = [json.loads(line) for line in open(workdir / 'results.jsonl', encoding='utf-8')]
  assert saved[-1]['time'] == row['time']
  assert {k: saved[-1][k] for k in ('model', 'n', 'crop', 'resolution', 'step', 'dataset')} == {
      'model': 'resnet_tiny', 'n': SPLIT_SIZE, 'crop': 'center', 'resolution': 16, 'step': 30,
      'dataset': 'digits'}
  assert saved[-1]['top1_err'] == pytest.approx(1 - top1)
  assert saved[-1]['top5_err'] == pytest.approx(1 - top5)
  assert saved[-1]['param_count'] == sum(x.size for x in jax.tree.leaves(_saved(workdir, 30)['params']))


@pytest.mark.slow
def test_ten_crop_averages_softmax_over_views(run):
  workdir, config = run
  row = evaluate.run(workdir=str(workdir), ten_crop=True, progress=False)
  assert row['n'] == SPLIT_SIZE and row['crop'] == '10-crop'
  assert 0 <= row['top1'] <= row['top5'] <= 1
  assert row['top1_err'] == 1 - row['top1'] and row['top5_err'] == 1 - row['top5']
  images, labels = _split(config, ten_crop=True)
  assert images.shape == (SPLIT_SIZE, 10, 16, 16, 3)
  top1, top5, loss = _expected(_probs(workdir, 30, images), labels)
  assert (row['top1'], row['top5']) == (top1, top5)
  assert row['loss'] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
def test_ensemble_is_the_mean_of_softmaxes(run):
  workdir, config = run
  paths = [str(workdir / 'checkpoints' / s) for s in ('15', '30')]
  row = evaluate.run(checkpoints=paths, progress=False)
  images, labels = _split(config)
  p15, p30 = _probs(workdir, 15, images), _probs(workdir, 30, images)
  top1, top5, loss = _expected((p15 + p30) / 2, labels)
  assert (row['n'], row['top1'], row['top5']) == (SPLIT_SIZE, top1, top5)
  assert row['loss'] == pytest.approx(loss, rel=1e-5)
  assert row['model'] == 'resnet_tiny x2' and row['step'] == [15, 30]
  for member, p in zip(row['members'], (p15, p30)):
    alone = _expected(p, labels)
    assert member['top1_err'] == pytest.approx(1 - alone[0])
    assert member['top5_err'] == pytest.approx(1 - alone[1])


@pytest.mark.slow
def test_converted_weights_give_the_runs_result(run, tmp_path):
  workdir, config = run
  model = _model(workdir, 30)
  weights.save(str(tmp_path / 'w'), 'resnet_tiny', nnx.state(model, weights.WEIGHTS),
               {'num_classes': 10}, source='test')
  row = evaluate.run(config, checkpoints=[str(tmp_path / 'w')], batch_size=7, progress=False)
  images, labels = _split(config)
  top1, top5, _ = _expected(_probs(workdir, 30, images), labels)
  assert (row['n'], row['top1'], row['top5'], row['step']) == (SPLIT_SIZE, top1, top5, None)


def test_best_is_the_step_with_the_lowest_validation_error(run):
  workdir, _ = run
  errors = {r['step']: r['top1_error'] for r in _eval_records(workdir)}
  assert sorted(errors) == [15, 30]
  assert load.locate(str(workdir), best=True).step == min(errors, key=lambda s: (errors[s], -s))
  assert load.locate(str(workdir)).step == 30
  assert load.locate(str(workdir), step=15).step == 15


def test_clear_errors(run, tmp_path):
  workdir, config = run
  with pytest.raises(FileNotFoundError, match='no finished checkpoint'):
    evaluate.run(workdir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='no checkpoint at step 7 .* steps: \\[15, 30\\]'):
    load.locate(str(workdir), step=7)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    evaluate.run(checkpoints=[str(tmp_path / 'missing')])
  with pytest.raises(ValueError, match='holds no checkpoint'):
    evaluate.run(checkpoints=[str(tmp_path)])
  other = _config()
  other.model.name = 'vgg_tiny'
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match='checkpoint of resnet_tiny, but the config evaluates vgg_tiny'):
    evaluate.run(other, workdir=str(workdir))
  imagenet = _config()
  imagenet.data.name, imagenet.data.data_dir = 'imagenet2012', str(tmp_path)
  with pytest.raises(FileNotFoundError, match='(?s)not prepared.*python -m cnn_jax.data.prepare imagenet2012'):
    evaluate.run(imagenet, workdir=str(workdir))


@pytest.mark.slow
def test_cli_on_8_devices_counts_each_example_once(run):
  """eval.py with the batch sharded over 8 devices (16 per step: 360 = 22 x 16 + 8 padded)."""
  workdir, _ = run
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={workdir}', '--batch_size=16',
                        '--compilation_cache=', '--noprogress'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'n=360' in out.stdout
  with open(workdir / 'results.jsonl', encoding='utf-8') as f:
    row = [json.loads(line) for line in f][-1]
  trained = _eval_records(workdir)[-1]
  assert (row['n'], row['top1'], row['top5']) == (SPLIT_SIZE, trained['top1'], trained['top5'])


def test_cli_without_a_checkpoint_fails_with_the_reason(tmp_path):
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={tmp_path}', '--compilation_cache='],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode != 0
  assert 'no finished checkpoint' in out.stderr and 'python train.py' in out.stderr


def test_ensemble_of_networks_that_place_the_crop_differently_is_refused():
  """resnet18 (torchvision weights: whole-pixel Resize + CenterCrop) and bn_nin (the exact centre
  crop) normalise with the same ImageNet mean/std and crop 224 of 256 alike; only their
  eval_geometry differs, and the loader would give both the first network's."""
  source = lambda name: load.Source(f'/ckpt/{name}', name, 1000, 224, {}, None, None, None)
  networks = [load.Network(source(name), None, None, None) for name in ('resnet18', 'bn_nin')]
  config = data.default_data_config()
  match = r"prepare their input differently.*'torchvision'\).*'exact'\)"
  with pytest.raises(ValueError, match=match):
    evaluate.evaluate(networks, config, split='validation', image_size=224, batch_size=8)
  config.mean, config.std, config.crop_fraction = (0.5,) * 3, (0.5,) * 3, 0.875
  with pytest.raises(ValueError, match=match):  # no config setting makes one geometry of two
    evaluate.evaluate(networks, config, split='validation', image_size=224, batch_size=8)
