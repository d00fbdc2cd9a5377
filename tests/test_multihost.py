"""Multi-host training on JAX's distributed runtime, with processes on 127.0.0.1 (issue #7).

Two processes x 2 CPU devices (gloo collectives) against one process x 4 devices, same global batch
and seed, on configs/quickstart.py:runlocal. Process p reads examples p, p + 2, ... of each global
batch, so the rows are permuted; resnet_tiny (BatchNorm over the global batch, no dropout) is
invariant to that, and the runs differ only in the order of floating-point sums. In one go:
- process 1 is SIGKILLed mid-run: process 0 must not hang; once process 1 has missed heartbeats
  for 10 s the coordination service reports task 1 unhealthy and JAX aborts process 0 (SIGABRT);
- restarting both resumes from the last checkpoint and ends at the parameters of the 1-process run;
- evaluation over the two processes' shards equals the 1-process evaluation (each example once);
- the 2-process checkpoint resumes in a 1-process run, which matches the 1-process run continued.
Every process is started by the test on a free port and killed if it outlives its timeout.
"""

import re
import shutil
import signal
import subprocess

import jax
import numpy as np
import portpicker
import pytest

from cnn_jax import checkpoint
from test_trainer import leaves, records, start  # tests/ is on sys.path under pytest

QUICK = 'configs/quickstart.py:runlocal'  # resnet_tiny, 32 px, global batch 16
ARGS = ['--config.num_train_steps=6', '--config.checkpoint_every_steps=2',
        '--config.eval_every_steps=6']
HEARTBEAT_S = 10
TIMEOUT_S = 420  # per group of processes: a hung peer fails the test instead of hanging CI


def start_processes(cache, workdir, *args, processes=2, kill_process=None):
  """`processes` train.py processes x (4 / processes) CPU devices joined through 127.0.0.1."""
  port = portpicker.pick_unused_port()
  return [start(cache, workdir, *args, f'--coordinator_address=127.0.0.1:{port}',
                f'--num_processes={processes}', f'--process_id={i}',
                f'--heartbeat_timeout_s={HEARTBEAT_S}', '--distributed_init_timeout_s=120',
                *(['--kill_after_saves=2', '--kill_delay_batches=1'] if i == kill_process else []),
                devices=4 // processes, config=QUICK)
          for i in range(processes)]


def finish_all(procs, expect_rcs=None):
  """Wait for all (killing every one on timeout); their outputs; return codes as expected."""
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S)[0])
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f'a process was still running after {TIMEOUT_S} s:\n'
                + '\n'.join(p.communicate()[0][-3000:] for p in procs))
  rcs = [p.returncode for p in procs]
  expected = expect_rcs or [0] * len(procs)
  ok = all(rc == e if e is not None else rc != 0 for rc, e in zip(rcs, expected))
  assert ok, f'exit codes {rcs}, expected {expected}:\n' + '\n=====\n'.join(o[-4000:] for o in outs)
  return outs


def assert_same_state(a_dir, b_dir):
  step_a, a, _ = checkpoint.load_state(a_dir)
  step_b, b, _ = checkpoint.load_state(b_dir)
  assert step_a == step_b
  for (path, x), (_, y) in zip(leaves(a), leaves(b), strict=True):
    # Sums in another order over 6+ SGD steps: ~1e-6 apart (momentum traces); a wrong batch or a
    # missed step is ~1e-2 apart.
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  return step_a


@pytest.mark.slow
def test_two_processes_match_one_survive_a_dead_peer_and_move_checkpoints(cache, tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  # One process x 4 devices straight, and 2 x 2 with process 1 SIGKILLed one batch after the
  # step-4 save began (so the step-2 checkpoint is complete; step 4's may be too).
  procs = [start(cache, one, *ARGS, devices=4, config=QUICK),
           *start_processes(cache, two, *ARGS, kill_process=1)]
  out_one, out0, _ = finish_all(procs, expect_rcs=[0, -signal.SIGABRT, -signal.SIGKILL])
  assert "mesh {'data': 4, 'model': 1}" in out_one
  assert 'process 0 of 2; 2 local devices of 4' in out0
  # JAX's coordination service names the dead task (1) and terminates the survivor (jax 0.10 text).
  assert re.search(r'unhealthy \(stopped sending heartbeats\):\s*\n1\n', out0), out0[-3000:]
  assert ('Terminating process because the JAX distributed service detected fatal errors'
          in out0), out0[-3000:]
  step_killed = checkpoint.load_state(two)[0]
  assert step_killed in (2, 4)

  # Restart both: they resume from the last checkpoint and end where the 1-process run ended.
  out0, _ = finish_all(start_processes(cache, two, *ARGS))
  assert f'resumed from {two / "checkpoints"} at step {step_killed}' in out0
  assert assert_same_state(one, two) == 6
  # Only process 0 wrote metrics; its evaluation over both shards equals the single process's.
  eval_one, eval_two = records(one, 'eval')[-1], records(two, 'eval')[-1]
  np.testing.assert_allclose(eval_two['loss'], eval_one['loss'], rtol=1e-4)
  assert abs(eval_two['top1'] - eval_one['top1']) <= 1 / 360  # 360 test digits

  # The 2-process checkpoint resumes in a single process (4 devices), and matches the
  # 1-process run continued for the same steps.
  moved = tmp_path / 'moved'
  shutil.copytree(two, moved)
  more = ['--config.num_train_steps=7', '--config.eval_every_steps=-1']
  procs = [start(cache, moved, *more, devices=4, config=QUICK),
           start(cache, one, *more, devices=4, config=QUICK)]
  out_moved, _ = finish_all(procs)
  assert f'resumed from {moved / "checkpoints"} at step 6' in out_moved
  assert assert_same_state(one, moved) == 7
