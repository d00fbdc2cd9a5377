"""Loader contract: sizes, dtypes, sharding, padding, determinism, save/restore (no downloads)."""

import numpy as np
import pytest

from cnn_jax import data
from cnn_jax.data import sources


def _config(**kw):
  c = data.default_data_config()
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_digits_sizes_and_split():
  c = _config(name='digits')
  assert data.num_examples(c, 'train') == 1437 and data.num_examples(c, 'test') == 360
  assert data.num_classes(c) == 10
  train, test = sources.digits('train'), sources.digits('test')
  from sklearn import datasets
  d = datasets.load_digits()
  np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), d.target)
  assert train.images.max() == 255 and train.images.dtype == np.uint8


def test_embedded_splits_slice_like_tfds():
  c = _config(name='digits')
  whole = sources.digits('train')
  head, tail = sources.get_source(c, 'train[:100]'), sources.get_source(c, 'train[-37:]')
  assert len(head) == 100 and data.num_examples(c, 'train[:100]') == 100 and len(tail) == 37
  np.testing.assert_array_equal(head.labels, whole.labels[:100])
  np.testing.assert_array_equal(tail.images, whole.images[-37:])
  with pytest.raises(ValueError, match='digits has splits'):
    sources.get_source(c, 'validation[:10]')


def test_train_batches_contract():
  c = _config(name='digits', augment='alexnet')
  it = data.make_loader(c, 'train', train=True, global_batch_size=16, seed=0, image_size=32,
                        model_name='alexnet', process_index=0, process_count=1)
  b = next(it)
  assert b['image'].shape == (16, 32, 32, 3) and b['image'].dtype == np.float32
  assert b['label'].shape == (16,) and b['label'].dtype == np.int32
  assert b['mask'].dtype == bool and b['mask'].all()
  # Normalised with ImageNet mean/std: black pixels near -mean/std, white near (1 - mean)/std.
  assert -2.5 < b['image'].min() < -1.5 and 2.0 < b['image'].max() < 3.0


def test_train_repeats_forever_and_reshuffles():
  c = _config(name='digits')
  n = data.num_examples(c, 'train')  # 1437 = 3 * 479
  it = data.make_loader(c, 'train', train=True, global_batch_size=479, seed=1, image_size=8,
                        process_index=0, process_count=1)
  epochs = [np.concatenate([b['label'] for b in _take(it, 3)]) for _ in range(2)]
  labels = sources.digits('train').labels
  for e in epochs:  # each epoch is a permutation of the split
    np.testing.assert_array_equal(np.sort(e), np.sort(labels))
  assert not np.array_equal(epochs[0], epochs[1]) and len(epochs[0]) == n


def test_train_deterministic_for_seed_and_restores():
  c = _config(name='digits', augment='inception')
  make = lambda seed: data.make_loader(c, 'train', train=True, global_batch_size=8, seed=seed,
                                       image_size=16, process_index=0, process_count=1)
  a, b = _take(make(3), 3), _take(make(3), 3)
  _assert_same_batches(a, b)
  assert not np.array_equal(a[0]['label'], _take(make(4), 1)[0]['label'])
  it = make(3)
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 2)
  resumed = make(3)
  resumed.set_state(state)
  _assert_same_batches(expected, _take(resumed, 2))


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_counts_every_example_once(process_count):
  c = _config(name='digits')
  n = data.num_examples(c, 'test')  # 360; batch 7 per process divides neither 360 nor 180
  seen, batches = [], []
  for p in range(process_count):
    it = data.make_loader(c, 'test', train=False, global_batch_size=7 * process_count, seed=0,
                          image_size=8, process_index=p, process_count=process_count)
    bs = list(it)
    batches.append(len(bs))
    for b in bs:
      assert b['image'].shape == (7, 8, 8, 3)
      seen.append(b['image'][b['mask']])
      assert not b['image'][~b['mask']].any()  # pads are zeros
  assert len(set(batches)) == 1  # every process runs the same number of eval steps
  seen = np.concatenate(seen)
  assert len(seen) == n
  # Each test image appears once: compare the (exact, unaugmented) 8x8 images as bytes.
  expected = data.make_loader(c, 'test', train=False, global_batch_size=n, seed=0, image_size=8,
                              process_index=0, process_count=1)
  full = next(expected)['image']
  assert sorted(x.tobytes() for x in seen) == sorted(x.tobytes() for x in full)


@pytest.mark.slow  # starting grain's worker processes takes ~10-20 s here
def test_worker_processes_give_the_same_batches_and_restore():
  make = lambda workers: data.make_loader(
      _config(name='digits', augment='vgg', num_workers=workers), 'train', train=True,
      global_batch_size=8, seed=2, image_size=16, process_index=0, process_count=1)
  it = make(2)
  # Worker k makes batches k, k + 2, ...: the stream does not depend on the number of workers.
  _assert_same_batches(_take(make(0), 5), _take(it, 5))
  state = it.get_state()  # after 5 batches; the trainer checkpoints this
  expected = _take(it, 3)
  resumed = make(2)
  resumed.set_state(state)
  _assert_same_batches(expected, _take(resumed, 3))
