"""Top-1 / top-5 error of a checkpoint on the whole validation split. See cnn_jax/evaluate.py.

  python eval.py --workdir=DIR [--config=configs/<recipe>.py] [--best | --step=N] [--ten_crop]
  python eval.py --checkpoint=PATH [--checkpoint=PATH ...]       # several: an ensemble

PATH: a train.py workdir, one of its checkpoints/<step> directories, or converted weights
(`python -m cnn_jax.convert`). Without --config, the run's own config.json gives the dataset,
resolution and batch size (ImageNet's validation split for converted weights). The results row is
printed and appended to <workdir>/results.jsonl. Several processes/hosts: the flags of train.py
(--distributed, or --coordinator_address, --num_processes, --process_id); process 0 prints and writes.
A mistake (a missing checkpoint, an empty split ...) is reported as one line `error: ...` (exit code
2); --verbose shows its traceback.
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax import errors, evaluate, host_memory, parallel

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A recipe in configs/ (dataset, resolution, eval batch size, mesh); default: the '
    "run's config.json", lock_config=False)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'A train.py workdir: its checkpoint is evaluated (unless --checkpoint is given) '
    'and results.jsonl is appended there.')
_CHECKPOINTS = flags.DEFINE_multi_string(
    'checkpoint', [], 'A workdir, a <workdir>/checkpoints/<step> directory or converted weights; '
    'repeat the flag to evaluate an ensemble (softmax averaged over the networks).')
_BEST = flags.DEFINE_bool('best', False, "The run's checkpoint with the lowest validation top-1 "
                          'error (from its metrics.jsonl) instead of the latest.')
_STEP = flags.DEFINE_integer('step', None, 'Evaluate this step of the run instead of the latest.')
_TEN_CROP = flags.DEFINE_bool('ten_crop', False, 'Average the softmax over 10 views: four corners '
                              'and centre, and their mirrors (AlexNet §4.1).')
_SPLIT = flags.DEFINE_string('split', None, 'Dataset split; default: the config\'s data.eval_split.')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Global eval batch; default: eval_batch_size.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar with images/s.')
_CACHE = flags.DEFINE_string(
    'compilation_cache', '~/.cache/cnn_jax/xla', 'Persistent XLA compilation cache; "" = off.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value and not _CHECKPOINTS.value:
    raise app.UsageError('pass --workdir=DIR (a train.py run) or --checkpoint=PATH')
  if _BEST.value and _STEP.value is not None:
    raise app.UsageError('--best and --step exclude each other')
  parallel.initialize_distributed()
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(_CACHE.value))
  # Orbax logs every restore at INFO; keep the console to the results.
  logging.get_absl_handler().addFilter(lambda record: '/orbax/' not in record.pathname)
  evaluate.run(_CONFIG.value, workdir=_WORKDIR.value, checkpoints=_CHECKPOINTS.value,
               step=_STEP.value, best=_BEST.value, ten_crop=_TEN_CROP.value, split=_SPLIT.value,
               batch_size=_BATCH.value, progress=_PROGRESS.value)


if __name__ == '__main__':
  host_memory.keep_freed_memory()
  errors.run(main)
