"""Train a recipe: `python train.py --config=configs/<recipe>.py[:args] --workdir=DIR [--config.x=y]`.

Running again with the same --workdir resumes from its latest checkpoint. See cnn_jax/trainer.py.
A mistake (config, data, workdir) is reported as one line `error: ...` (exit code 2); --verbose
shows its traceback. Several processes/hosts: add --distributed (cluster environment) or
--coordinator_address, --num_processes, --process_id to each (flags in cnn_jax/parallel.py;
examples/slurm_2node.sbatch).
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax import errors, host_memory, parallel, trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A recipe in configs/, optionally with arguments: configs/resnet.py:depth=50')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and the resolved config go here.')
_CACHE = flags.DEFINE_string(
    'compilation_cache', '~/.cache/cnn_jax/xla',
    'Persistent XLA compilation cache (makes restarts and resumes start faster); "" = off.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    raise errors.UserError(f'--workdir={_WORKDIR.value} is a file; pass a directory (created if '
                           'missing, resumed if it holds a run)')
  parallel.initialize_distributed()
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(_CACHE.value))
  # Orbax logs every checkpoint step at INFO; keep the console to the training lines.
  logging.get_absl_handler().addFilter(lambda record: '/orbax/' not in record.pathname)
  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  host_memory.keep_freed_memory()
  errors.run(main)
