"""The moving average of the weights that GoogLeNet (Szegedy et al. 2015 §6, Polyak averaging) and
Inception v3/v4 (Szegedy et al. 2016 §8) evaluate, as TensorFlow computes it:
`tf.train.ExponentialMovingAverage(decay, num_updates)` uses min(decay, (1 + n) / (10 + n)) and
`shadow <- d shadow + (1 - d) variable`, applied after the n-th update; TF-slim's
train_image_classifier averages `slim.get_model_variables()`, i.e. the weights and the BatchNorm
moving statistics.

End to end: a few steps of resnet_tiny on the digits with an EMA, across a resume; the validation
metrics are recomputed here from the checkpoint's EMA arrays (a plain forward pass, not the trainer's
eval step), and eval.py --workdir reports the same top-1.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnn_jax import checkpoint, data, models, optim, trainer
from test_configs import recipe  # tests/ is on sys.path under pytest

REPO = Path(__file__).resolve().parents[1]


def test_ema_decay_follows_tensorflows_num_updates_rule():
  """min(0.9999, (1 + n) / (10 + n)): n = 1: 2/11, n = 2: 3/12, n = 90: 91/100, then capped."""
  got = [float(optim.ema_decay(0.9999, n)) for n in (0, 1, 2, 90, 10 ** 6)]
  np.testing.assert_allclose(got, [0.1, 2 / 11, 0.25, 0.91, 0.9999], rtol=1e-6)


def test_ema_after_three_updates_by_hand():
  """Shadow 1.0 (the initial weight), weights 0.0, 2.0, 4.0 after updates 1, 2, 3, decay 0.9999:
    n=1: d = 2/11:  1 * 2/11 + 0 * 9/11                = 0.181818182
    n=2: d = 3/12:  0.181818182 * 0.25 + 2 * 0.75      = 1.545454545
    n=3: d = 4/13:  1.545454545 * 4/13 + 4 * 9/13      = 3.244755245
  The old rule (fixed 0.9999 from the initial weights) would give 1.0005998."""
  average = {'w': jnp.ones(())}
  got = []
  for n, w in ((1, 0.0), (2, 2.0), (3, 4.0)):
    average = optim.ema_update(average, {'w': jnp.full((), w)}, 0.9999, n)
    got.append(float(average['w']))
  np.testing.assert_allclose(got, [0.181818182, 1.545454545, 3.244755245], rtol=1e-6)


def _values(tree):
  """Orbax's {'value': array} leaves -> arrays."""
  if isinstance(tree, dict):
    if set(tree) == {'value'}:
      return np.asarray(tree['value'])
    return {k: _values(v) for k, v in tree.items()}
  return np.asarray(tree)


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _forward_metrics(config, weights):
  """Loss and top-1 over the eval split with `weights` ({'params', 'model_state'} arrays), computed
  with a plain nnx forward pass and numpy (not the trainer's eval step)."""
  model = models.create(config.model.name, 10, rngs=nnx.Rngs(0))
  graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  nnx.replace_by_pure_dict(params, weights['params'])
  nnx.replace_by_pure_dict(stats, weights['model_state'])
  model = nnx.merge(graphdef, params, stats, rest)
  forward = nnx.jit(lambda m, x: m(x, train=False))
  losses, correct = [], []
  for batch in data.make_loader(config.data, config.data.eval_split, train=False,
                                global_batch_size=config.eval_batch_size, seed=0,
                                image_size=config.image_size, model_name=config.model.name):
    keep = np.asarray(batch['mask'])
    logits = np.asarray(forward(model, jnp.asarray(batch['image'])), np.float64)[keep]
    labels = np.asarray(batch['label'])[keep]
    log_probs = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1,
                                       keepdims=True)) - logits.max(1, keepdims=True)
    losses.append(-log_probs[np.arange(len(labels)), labels])
    correct.append(np.argmax(logits, 1) == labels)
  return float(np.mean(np.concatenate(losses))), float(np.mean(np.concatenate(correct)))


@pytest.fixture
def compilation_cache(cache):
  """The resumed run and eval.py load their executables from a persistent cache."""
  old = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_compilation_cache_dir', str(cache))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  yield cache
  jax.config.update('jax_compilation_cache_dir', old[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])


@pytest.mark.slow
def test_ema_end_to_end_train_resume_validate_and_eval_py(tmp_path, compilation_cache):
  config = recipe('quickstart').get_config('runlocal')  # resnet_tiny (BatchNorm), 32 px, batch 16
  config.ema_decay = 0.9999
  config.schedule.name = 'constant'
  config.num_train_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = 10
  config.log_every_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path))
  config.num_train_steps = 4  # resumes at step 2
  trainer.train_and_evaluate(config, str(tmp_path))

  states = {s: {k: _values(v) for k, v in checkpoint.load_state(str(tmp_path), s)[1].items()
                if k in ('params', 'model_state', 'ema')} for s in (2, 3, 4)}
  # The average moved by TF's rule at updates 3 (after the resume) and 4: d = 4/13, then 5/14, over
  # the weights and the BatchNorm statistics.
  for n, d in ((3, 4 / 13), (4, 5 / 14)):
    previous, now = states[n - 1]['ema'], states[n]
    assert set(previous) == {'params', 'model_state'}
    for part in ('params', 'model_state'):
      for (path, avg), (_, old), (_, new) in zip(_leaves(now['ema'][part]),
                                                 _leaves(previous[part]), _leaves(now[part]),
                                                 strict=True):
        np.testing.assert_allclose(avg, d * old + (1 - d) * new, rtol=1e-5, atol=1e-6,
                                   err_msg=f'{part}{jax.tree_util.keystr(path)} at step {n}')

  # Validation at step 4 evaluated the average: recompute it from the checkpoint's arrays.
  with open(tmp_path / 'metrics.jsonl', encoding='utf-8') as f:
    evals = [r for r in map(json.loads, f) if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [2, 4]
  last = states[4]
  loss, top1 = _forward_metrics(config, last['ema'])
  np.testing.assert_allclose(evals[-1]['loss'], loss, rtol=1e-4)
  np.testing.assert_allclose(evals[-1]['top1'], top1, atol=1e-9)
  raw_loss, _ = _forward_metrics(config, {'params': last['params'],
                                          'model_state': last['model_state']})
  assert abs(raw_loss - loss) > 1e-3, (raw_loss, loss)  # the raw weights give another loss

  # eval.py on the workdir restores the same average and reports the same top-1.
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={tmp_path}', '--noprogress',
                        f'--compilation_cache={compilation_cache}'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  with open(tmp_path / 'results.jsonl', encoding='utf-8') as f:
    row = json.loads(f.readlines()[-1])
  assert row['step'] == 4
  np.testing.assert_allclose(row['top1_err'], 1 - top1, atol=1e-9)
