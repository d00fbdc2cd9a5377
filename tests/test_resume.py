"""Checkpoints of the trainer: a run SIGKILLed mid-save resumes bitwise equal to an uninterrupted one;
8 devices train like 1 and their checkpoints move both ways; Orbax keeps the latest and the best.

Runs go through tests/trainer_worker.py (train.py) in subprocesses, as in tests/test_trainer.py,
whose helpers this file shares (a separate file so that pytest-xdist runs it beside that one).
"""

import shutil

import jax
import numpy as np
import pytest

from cnn_jax import checkpoint
from test_trainer import finish, leaves, run, start  # tests/ is on sys.path under pytest


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(cache, tmp_path):
  args = ['--config.num_train_steps=8', '--config.checkpoint_every_steps=2',
          '--config.eval_every_steps=3']
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  first = start(cache, straight, *args)
  # Killed at once after the step-4 save started (the write is most likely still in flight).
  finish(start(cache, killed, *args, '--kill_after_saves=2'), expect_rc=-9)
  finish(first)
  step_killed = checkpoint.load_state(killed)[0]
  assert step_killed in (2, 4)
  out = run(cache, killed, *args)
  assert f'resumed from {killed / "checkpoints"} at step {step_killed}' in out
  step_a, a, meta = checkpoint.load_state(straight)
  step_b, b, _ = checkpoint.load_state(killed)
  assert step_a == step_b == 8
  assert meta['model'] == 'vgg_tiny'
  assert 'plateau' in a and a.keys() == b.keys()
  for (path, x), (_, y) in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_eight_devices_match_one_and_checkpoints_move_between_them(cache, tmp_path):
  args = ['--config.num_train_steps=3', '--config.eval_every_steps=3']
  one, eight = tmp_path / 'one', tmp_path / 'eight'
  procs = [start(cache, one, *args), start(cache, eight, *args, devices=8)]
  outs = [finish(p) for p in procs]
  assert "mesh {'data': 8, 'model': 1}" in outs[1]
  _, a, _ = checkpoint.load_state(one)
  _, b, _ = checkpoint.load_state(eight)
  for (path, x), (_, y) in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))

  # 1 -> 8 and 8 -> 1 devices: resume each on the other device count for one more step.
  shutil.copytree(one, tmp_path / 'one_to_eight')
  shutil.copytree(eight, tmp_path / 'eight_to_one')
  more = ['--config.num_train_steps=4', '--config.eval_every_steps=4']
  procs = [start(cache, tmp_path / 'one_to_eight', *more, devices=8),
           start(cache, tmp_path / 'eight_to_one', *more)]
  for p in procs:
    assert 'at step 3' in finish(p)
  step_c, c, _ = checkpoint.load_state(tmp_path / 'one_to_eight')
  step_d, d, _ = checkpoint.load_state(tmp_path / 'eight_to_one')
  assert step_c == step_d == 4
  for (path, x), (_, y) in zip(leaves(c), leaves(d), strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))


def test_checkpoints_keep_the_latest_and_the_best_across_restarts(tmp_path):
  """keep=1 retains the latest step plus the lowest validation error, also after reopening."""
  import grain  # pylint: disable=g-import-not-at-top

  def save(ckpt, step, top1_error):
    iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
    ckpt.save(step, {'x': np.full(2, step, np.float32)}, iterator,
              None if top1_error is None else {'top1_error': top1_error})
    ckpt.wait()

  identity = {'model': 'resnet_tiny', 'num_classes': 10, 'image_size': 32}
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, identity=identity, async_save=False)
  for step, err in ((1, 0.5), (2, 0.2), (3, 0.4), (4, None)):
    save(ckpt, step, err)
  assert ckpt.manager.all_steps() == [2, 4]
  ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, identity=identity, async_save=False)
  save(ckpt, 5, 0.3)  # step 2's error must have been read back from disk to keep it
  assert ckpt.manager.all_steps() == [2, 5] and ckpt.manager.best_step() == 2
  ckpt.close()
