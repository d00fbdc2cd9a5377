"""The input pipeline: sources (TFDS array_record, image folders, digits, Fashion-MNIST), the papers'
transforms, and a grain loader that is deterministic, sharded per process and checkpointable.

`make_loader(config.data, split, train=..., global_batch_size=..., seed=..., image_size=...)` returns an
iterator of host batches `{'image': float32 (B, H, W, 3), 'label': int32 (B,), 'mask': bool (B,)}` with
`get_state()` / `set_state()`; `num_examples` and `num_classes` describe a dataset, `check_splits` checks
it before a run. An unusable dataset raises `cnn_jax.errors.DataError`: an empty split, labels outside
[0, num_classes), or (with skip_corrupt) more corrupt images than readable ones.
"""

from __future__ import annotations

import functools
import logging
import math

import grain
import numpy as np

from cnn_jax.data import sources, transforms
from cnn_jax.data.config import default_data_config
from cnn_jax.errors import DataError

__all__ = ['check_splits', 'default_data_config', 'make_loader', 'num_classes', 'num_examples']

DEFAULT_CROP_FRACTION = 0.875  # 224 / 256, when no model is named
# skip_corrupt gives up (DataError) when one training example meets this many corrupt images in a
# row, or when more than MAX_CORRUPT_FRACTION of the images a loader read are corrupt (counted from
# MIN_READS reads on, or the whole split of this process when it is smaller): then the data is
# unreadable, not a few bad files, and skipping would loop or train on a sliver of it.
MAX_CORRUPT_IN_A_ROW = 20
MAX_CORRUPT_FRACTION = 0.5
MIN_READS = 100


@functools.lru_cache(maxsize=16)
def _cached_source(name, data_dir, split, train_split):
  cfg = default_data_config()
  cfg.name, cfg.data_dir, cfg.train_split = name, data_dir, train_split
  return sources.get_source(cfg, split)


def _source(data_config, split):
  return _cached_source(data_config.name, data_config.data_dir, split, data_config.train_split)


def num_examples(data_config, split: str) -> int:
  """The number of examples of `split`."""
  return len(_source(data_config, split))


def num_classes(data_config) -> int:
  """The number of classes of the dataset."""
  return _source(data_config, data_config.train_split).num_classes


def check_splits(data_config, splits, num_classes: int) -> None:  # pylint: disable=redefined-outer-name
  """Fail (DataError) unless every split in `splits` exists, has examples, uses the train split's
  classes (image folders) and has labels in [0, num_classes): before a run compiles or trains."""
  for split in splits:
    source = _source(data_config, split)
    labels = source.labels
    if labels is None:  # TFDS: its ClassLabel feature keeps labels in [0, source.num_classes)
      if source.num_classes > num_classes:
        raise DataError(f'{data_config.name} has {source.num_classes} classes but num_classes='
                        f'{num_classes}; set --config.num_classes={source.num_classes} or leave it '
                        "unset (None: the dataset's)")
      continue
    for i in (int(np.argmax(labels)), int(np.argmin(labels))):
      if not 0 <= labels[i] < num_classes:
        raise DataError(f'{source.describe(i)} (split {split!r}) has label {labels[i]}, outside '
                        f'[0, num_classes={num_classes}); set --config.num_classes='
                        f'{max(source.num_classes, int(labels.max()) + 1)} or leave it unset (None: '
                        "the dataset's)")


def model_preprocessing(data_config, model_name):
  """(mean, std, crop_fraction, eval_geometry): data_config.mean/std/crop_fraction where set, else
  the model's registry values (mean/std from its input convention), else ImageNet's torchvision
  convention (and the exact sub-pixel centre crop) when no model is named."""
  from cnn_jax import models  # pylint: disable=g-import-not-at-top
  info = models.get_info(model_name) if model_name else None
  default = info or models.registry.INPUT_CONVENTIONS['torchvision']
  mean = data_config.get('mean') or default.mean
  std = data_config.get('std') or default.std
  crop = data_config.get('crop_fraction') or (info.crop_fraction if info else DEFAULT_CROP_FRACTION)
  if not 0 < crop <= 1:
    raise ValueError(f'crop_fraction must be in (0, 1], got {crop}')
  geometry = info.eval_geometry if info else 'exact'
  return tuple(mean), tuple(std), crop, geometry


class _CorruptCounter:
  """The images one loader read and the corrupt ones it skipped (each grain worker process counts its
  own; its read threads share one, so the counts are approximate), and the bounds above."""

  def __init__(self, source, min_reads):
    self.source, self.min_reads = source, min_reads
    self.reads, self.skips, self.named = 0, 0, []

  def read(self):
    self.reads += 1

  def skip(self, error: Exception, index: int, in_a_row: int = 1) -> None:
    """Log a skipped image; raise a DataError naming a few when the data looks unreadable."""
    self.skips += 1
    if len(self.named) < 3 and self.source.describe(index) not in self.named:
      self.named.append(self.source.describe(index))
    logging.warning('skip_corrupt: skipped %d corrupt image(s) of %d read by this loader; this one: '
                    '%s', self.skips, self.reads, error)
    fraction = self.reads >= self.min_reads and self.skips > MAX_CORRUPT_FRACTION * self.reads
    if in_a_row >= MAX_CORRUPT_IN_A_ROW or fraction:
      what = (f'{in_a_row} images in a row' if in_a_row >= MAX_CORRUPT_IN_A_ROW else
              f'{self.skips} of the {self.reads} images read (over {MAX_CORRUPT_FRACTION:.0%})')
      raise DataError(f'data.skip_corrupt gave up: {what} failed to decode, e.g. '
                      f'{"; ".join(self.named)}. The data is unreadable, not a few bad files: check '
                      'data.data_dir and these files (data.skip_corrupt=False stops at the first one '
                      'with the reason)')


class _TrainExample:
  """Shuffled record index -> augmented example.

  With skip_corrupt, a corrupt image is skipped and replaced by a random other record (drawn from the
  example's own rng, so still deterministic): batches stay full and their order does not depend on
  the number of workers. Unreadable data stops the run (see MAX_CORRUPT_IN_A_ROW).
  """

  def __init__(self, source, transform, skip_corrupt):
    self.source, self.transform, self.skip_corrupt = source, transform, skip_corrupt
    self.corrupt = _CorruptCounter(source, min(MIN_READS, len(source)))

  def __call__(self, index, rng):
    index = int(index)
    for attempt in range(1, MAX_CORRUPT_IN_A_ROW + 1):
      record = self.source[index]
      self.corrupt.read()
      try:
        image = transforms.decode_check(lambda: self.transform(record['image'], rng),
                                        lambda: self.source.describe(index))  # pylint: disable=cell-var-from-loop
        return {'image': image, 'label': np.int32(record['label']), 'mask': np.True_}
      except transforms.CorruptImageError as e:
        if not self.skip_corrupt:
          raise
        self.corrupt.skip(e, index, attempt)  # raises at the last attempt
        index = int(rng.integers(len(self.source)))


class _EvalExample:
  """Position in this process's padded shard -> example, or a masked-out pad."""

  def __init__(self, source, transform, shard_indices, ten_crop, skip_corrupt):
    self.source, self.transform, self.shard = source, transform, shard_indices
    self.ten_crop, self.skip_corrupt = ten_crop, skip_corrupt
    self.corrupt = _CorruptCounter(source, min(MIN_READS, len(shard_indices)))
    n = 10 if ten_crop else None
    size = transform.size
    self.pad_image = np.zeros(((n,) if n else ()) + (size, size, 3), np.float32)

  def __call__(self, position):
    position = int(position)
    pad = {'image': self.pad_image, 'label': np.int32(0), 'mask': np.False_}
    if position >= len(self.shard):
      return pad
    index = int(self.shard[position])
    record = self.source[index]
    self.corrupt.read()
    fn = self.transform.ten_crop if self.ten_crop else self.transform
    try:
      image = transforms.decode_check(lambda: fn(record['image']),
                                      lambda: self.source.describe(index))
    except transforms.CorruptImageError as e:
      if not self.skip_corrupt:
        raise
      self.corrupt.skip(e, index)
      return pad
    return {'image': image, 'label': np.int32(record['label']), 'mask': np.True_}


def make_loader(data_config, split: str, *, train: bool, global_batch_size: int, seed: int,
                image_size: int, model_name: str | None = None,
                process_index: int | None = None, process_count: int | None = None,
                ten_crop: bool = False):
  """An iterator of host batches for this process: dicts of numpy arrays
  {'image': float32 (B_local, image_size, image_size, 3) normalised with the model's mean/std
   (registry metadata of `model_name`, or data_config.mean/std), 'label': int32 (B_local,),
   'mask': bool (B_local,) -- False for padding examples}.

  B_local = global_batch_size // process_count; process_index/count default to jax's.
  train=True: globally shuffled with `seed` (reshuffled every epoch), repeats forever (epochs run
    into each other, so no batch is ever short), this process takes every process_count-th example;
    augmentation per data_config.augment, seeded per example; mask all True. With skip_corrupt a
    corrupt image is skipped (logged, counted) and a random other record takes its place; see
    MAX_CORRUPT_IN_A_ROW for when it gives up.
  train=False: one pass in order; process p reads examples p, p + P, p + 2P, ...; every process yields
    the same number of batches, the last ones padded with mask False; every example of the split
    appears exactly once across processes. Eval transform: short side to image_size / crop_fraction,
    centre crop. ten_crop=True gives images (B_local, 10, image_size, image_size, 3).
  The iterator has get_state() -> dict and set_state(state) (a grain DatasetIterator): after
  set_state, the next batches equal those of an uninterrupted iterator.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the '
                     f'{process_count} processes')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  batch = global_batch_size // process_count
  source = _source(data_config, split)
  mean, std, crop_fraction, eval_geometry = model_preprocessing(data_config, model_name)
  resize = round(image_size / crop_fraction)
  n = len(source)
  # Threads per process (or per worker) that each make a batch ahead; simplejpeg, PIL and OpenCV
  # release the GIL while decoding and resizing.
  read_options = grain.ReadOptions(num_threads=data_config.read_threads,
                                   prefetch_buffer_size=data_config.read_threads)
  if train:
    transform = transforms.Transform(data_config.augment, image_size, resize, mean, std,
                                     data_config.train_antialias)
    ds = (grain.MapDataset.range(n).shuffle(seed=seed).repeat(None)
          .random_map(_TrainExample(source, transform, data_config.skip_corrupt), seed=seed))
    ds = ds[process_index::process_count].batch(batch, drop_remainder=True)
  else:
    transform = transforms.Transform(None, image_size, resize, mean, std,
                                     eval_geometry=eval_geometry)
    shard = np.arange(process_index, n, process_count)
    batches = math.ceil(math.ceil(n / process_count) / batch)
    ds = (grain.MapDataset.range(batches * batch)
          .map(_EvalExample(source, transform, shard, ten_crop, data_config.skip_corrupt))
          .batch(batch))
  # Batches are formed by index before the iterator, so worker k makes batches k, k + W, ... and
  # the order and the content of batches do not depend on the number of workers.
  ds = ds.to_iter_dataset(read_options)
  if data_config.num_workers:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags; outside app.run, defaults
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=data_config.num_workers, per_worker_buffer_size=data_config.prefetch))
  return iter(ds)
