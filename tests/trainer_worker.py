"""Runs `train.py` in a subprocess for tests/test_trainer.py, optionally SIGKILLing itself.

  python tests/trainer_worker.py --config=configs/x.py:runlocal --workdir=W [--config.k=v ...]
      [--kill_after_saves=K [--kill_delay_batches=M]]

The caller sets XLA_FLAGS (forced host device count) in the environment before this imports jax.
--kill_after_saves=K sends SIGKILL to this process M host batches after the K-th checkpoint save was
started (M=0: at once, while the asynchronous save is most likely still being written).
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

import train  # defines --config and --workdir  # pylint: disable=g-import-not-at-top
from cnn_jax import checkpoint, parallel  # pylint: disable=g-import-not-at-top

_SAVES = flags.DEFINE_integer('kill_after_saves', 0, 'SIGKILL after this many checkpoint saves.')
_DELAY = flags.DEFINE_integer('kill_delay_batches', 0, '... and this many more host batches.')


def _kill():
  os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
  if _SAVES.value:
    saves, batches = [0], [0]
    save, global_batch = checkpoint.Checkpointer.save, parallel.global_batch

    def killing_save(self, *args, **kwargs):
      save(self, *args, **kwargs)
      saves[0] += 1
      if saves[0] == _SAVES.value and not _DELAY.value:
        _kill()

    def killing_global_batch(*args, **kwargs):
      if saves[0] >= _SAVES.value:
        batches[0] += 1
        if batches[0] == _DELAY.value:
          _kill()
      return global_batch(*args, **kwargs)

    checkpoint.Checkpointer.save = killing_save
    parallel.global_batch = killing_global_batch
  train.main(argv)


if __name__ == '__main__':
  app.run(main)
