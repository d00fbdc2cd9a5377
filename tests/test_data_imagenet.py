"""TFDS's real `imagenet2012` builder on a fake ImageNet in the official tar layout, read back by the loader.

The fake: ILSVRC2012_img_train.tar holds one tar per synset (the first three of the builder's
labels.txt) of JPEGs; ILSVRC2012_img_val.tar holds ILSVRC2012_val_%08d.JPEG, which the builder labels
by sorted position against its shipped validation_labels.txt. Every image is a flat gray whose level
encodes its identity, so labels can be checked after the whole pipeline. Among them are a grayscale
JPEG, a CMYK JPEG and PNG data inside a .JPEG, as in the real archives.

The dataset is prepared by the command users run, in a subprocess: TensorFlow never loads into the
test process (where it would share the process with torch's libraries, which segfaults).
"""

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
from PIL import Image

from cnn_jax import data
from cnn_jax.data import prepare

import tensorflow_datasets as tfds  # reads the builder's label files; no TensorFlow needed

pytestmark = [
    pytest.mark.slow,  # ~30 s: TensorFlow's import and the builder
    pytest.mark.skipif(importlib.util.find_spec('tensorflow') is None,
                       reason='preparing needs TensorFlow: pip install -r requirements-prepare.txt')]

N_VAL, PER_CLASS = 10, 4
MEAN, STD = np.array((0.485, 0.456, 0.406)), np.array((0.229, 0.224, 0.225))


def _level(k):  # gray level of image number k
  return 20 + 15 * k


def _image(k, w, h, kind='RGB'):
  img = Image.new('RGB', (w, h), (_level(k),) * 3)
  buf = io.BytesIO()
  if kind == 'png':
    img.save(buf, 'PNG')
  else:
    img.convert(kind).save(buf, 'JPEG', quality=95)
  return buf.getvalue()


def _add(tar, name, blob):
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def _decode_levels(images):
  """Image number k of each (flat gray) image of a batch."""
  gray = (images.mean(axis=(1, 2)) * STD + MEAN) * 255
  return np.round((gray.mean(-1) - 20) / 15).astype(int)


@pytest.fixture(scope='module')
def fake_imagenet(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  labels = (tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split())
  val_synsets = (tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')
                 .read_text().split())[:N_VAL]
  train_labels = {}
  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for c, synset in enumerate(labels[:3]):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for i in range(PER_CLASS):
          k = c * PER_CLASS + i
          kind = {1: 'L', 2: 'CMYK', 3: 'png'}.get(k, 'RGB')
          _add(inner, f'{synset}_{k}.JPEG', _image(k, 60 + 7 * i, 50, kind))
          train_labels[k] = c
      _add(outer, f'{synset}.tar', buf.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as tar:
    for i in reversed(range(N_VAL)):  # archive order differs from sorted order
      _add(tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', _image(i, 50, 40 + 5 * i))
  val_labels = {i: labels.index(s) for i, s in enumerate(val_synsets)}
  data_dir = tmp_path_factory.mktemp('tfds')
  subprocess.run([sys.executable, '-m', 'cnn_jax.data.prepare', 'imagenet2012',
                  f'--manual_dir={manual}', f'--data_dir={data_dir}'], check=True, timeout=600,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cfg = data.default_data_config()
  cfg.name, cfg.data_dir, cfg.train_split, cfg.eval_split = ('imagenet2012', str(data_dir), 'train',
                                                             'validation')
  return cfg, train_labels, val_labels


def test_prepared_sizes(fake_imagenet):
  cfg, train_labels, val_labels = fake_imagenet
  assert data.num_examples(cfg, 'train') == len(train_labels) == 3 * PER_CLASS
  assert data.num_examples(cfg, 'validation') == len(val_labels) == N_VAL
  assert data.num_classes(cfg) == 1000


def test_validation_labels_through_the_pipeline(fake_imagenet):
  cfg, _, val_labels = fake_imagenet
  seen = {}
  for p in range(2):  # two processes' shards, batch 3 per process: padded, union = split
    for b in data.make_loader(cfg, 'validation', train=False, global_batch_size=6, seed=0,
                              image_size=32, model_name='alexnet', process_index=p,
                              process_count=2):
      for k, label in zip(_decode_levels(b['image'][b['mask']]), b['label'][b['mask']]):
        assert k not in seen
        seen[int(k)] = int(label)
  assert seen == val_labels


def test_train_labels_through_the_pipeline(fake_imagenet):
  cfg, train_labels, _ = fake_imagenet
  cfg = cfg.copy_and_resolve_references()
  cfg.augment = 'resnet'
  it = data.make_loader(cfg, 'train', train=True, global_batch_size=4, seed=0, image_size=32,
                        process_index=0, process_count=1)
  batches = [next(it) for _ in range(3)]  # one epoch of 12
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  # Flat images stay flat under crops and flips; lighting moves a gray level by well under 7.5.
  got = dict(zip(_decode_levels(images).tolist(), labels.tolist()))
  assert got == train_labels


def test_missing_tar_and_unprepared_dataset_are_explained(tmp_path, fake_imagenet):
  (tmp_path / 'ILSVRC2012_img_train.tar').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='ILSVRC2012_img_val.tar not found'):
    prepare.prepare('imagenet2012', str(tmp_path / 'out'), str(tmp_path))
  cfg = fake_imagenet[0].copy_and_resolve_references()
  cfg.data_dir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match=r'not prepared in .*empty.*\n.*cnn_jax\.data\.prepare '
                     r'imagenet2012 --manual_dir=.* --data_dir=.*empty'):
    data.num_examples(cfg, 'validation')


def test_reading_needs_no_tensorflow(fake_imagenet):
  cfg, _, val_labels = fake_imagenet
  code = textwrap.dedent(f"""
      import importlib.machinery, sys
      _find = importlib.machinery.PathFinder.find_spec  # hide TensorFlow, as if not installed
      importlib.machinery.PathFinder.find_spec = classmethod(
          lambda cls, name, path=None, target=None:
          None if name.split('.')[0] == 'tensorflow' else _find(name, path, target))
      from cnn_jax import data
      cfg = data.default_data_config()
      cfg.name, cfg.data_dir = 'imagenet2012', {cfg.data_dir!r}
      b = next(data.make_loader(cfg, 'validation', train=False, global_batch_size={N_VAL}, seed=0,
                                image_size=16, process_index=0, process_count=1))
      assert 'tensorflow' not in sys.modules
      print(sorted(b['label'].tolist()))
  """)
  env = {**os.environ, 'PYTHONPATH': os.getcwd()}
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       check=False, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split('\n')[-2] == str(sorted(val_labels.values()))
