"""Random-access data sources: `len(src)`, `src[i] -> {'image': bytes | uint8 (H, W, C), 'label': int}`.

Every source also has `num_classes`, `labels` (every record's label as an int array, or None where
reading them would cost a pass over the data: TFDS, whose ClassLabel feature keeps them in
[0, num_classes)) and `describe(i)` (names record `i` in error messages). They are plain picklable
objects, so grain can hand them to its worker processes. `get_source` refuses a split without
examples.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import re

import numpy as np

from cnn_jax.errors import DataError

DIGITS_TEST_FRACTION = 0.2
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'  # Debian package `dataset-fashion-mnist`
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.ppm', '.tif', '.tiff', '.webp')


class ArraySource:
  """In-memory images (N, H, W, C) uint8 and labels (N,)."""

  def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, num_classes: int):
    self.name, self.images, self.labels, self.num_classes = name, images, labels, num_classes

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict:
    return {'image': self.images[i], 'label': int(self.labels[i])}

  def describe(self, i: int) -> str:
    return f'{self.name} record {i}'

  def slice(self, start: int | None, stop: int | None) -> ArraySource:
    """Records [start:stop] (Python slice semantics), e.g. a small training subset."""
    window = slice(start, stop)
    return ArraySource(f'{self.name}[{start or ""}:{stop or ""}]', self.images[window],
                       self.labels[window], self.num_classes)


def digits(split: str) -> ArraySource:
  """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes; shipped inside the wheel).

  Fixed split: the first 80 % (1437 images) are 'train', the last 20 % (360) are 'test'. Pixel values
  0..16 are scaled to 0..255.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  n_train = int(len(d.target) * (1 - DIGITS_TEST_FRACTION))
  parts = {'train': slice(0, n_train), 'test': slice(n_train, None)}
  if split not in parts:
    raise ValueError(f'digits has splits {sorted(parts)}, not {split!r}')
  images = np.round(d.images[parts[split]] * (255 / 16)).astype(np.uint8)[..., None]
  return ArraySource(f'digits/{split}', images, d.target[parts[split]].astype(np.int32), 10)


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """An IDX file (LeCun's MNIST format), gzipped or not."""
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rb') as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], 'big') for k in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(split: str, data_dir: str | None = None) -> ArraySource:
  """Fashion-MNIST (Xiao et al. 2017): 28x28 gray, 60000 train / 10000 test, 10 classes, from IDX files."""
  root = pathlib.Path(data_dir or FASHION_MNIST_DIR)
  prefix = {'train': 'train', 'test': 't10k'}.get(split)
  if prefix is None:
    raise ValueError(f"fashion_mnist has splits ['test', 'train'], not {split!r}")
  files = {}
  for kind, name in (('images', 'idx3'), ('labels', 'idx1')):
    candidates = [root / f'{prefix}-{kind}-{name}-ubyte{ext}' for ext in ('.gz', '')]
    found = [p for p in candidates if p.exists()]
    if not found:
      raise FileNotFoundError(
          f'Fashion-MNIST file {candidates[0]} not found. Install it with `apt-get install '
          f'dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}), or set data.data_dir to a '
          'folder holding the IDX files.')
    files[kind] = _read_idx(found[0])
  return ArraySource(f'fashion_mnist/{split}', files['images'][..., None],
                     files['labels'].astype(np.int32), 10)


class FolderSource:
  """Encoded images in `root/<class>/<image>`; labels index the sorted class names `classes`."""

  def __init__(self, root: str, classes: list[str]):
    self.root, self.classes, self.num_classes = root, classes, len(classes)
    index = {c: k for k, c in enumerate(classes)}
    self.files, labels = [], []
    folders = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)))
    for c in folders:
      if c not in index:
        raise DataError(f'class folder {os.path.join(root, c)} is not among the {len(classes)} '
                        'class folders of the train split; every split must use the same class '
                        'folders: add it to the train split or remove it here')
      for f in sorted(os.listdir(os.path.join(root, c))):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          self.files.append(os.path.join(c, f))
          labels.append(index[c])
    if not self.files:
      raise DataError(f'no images in {root}: its class folders ({", ".join(folders) or "none"}) '
                      f'hold no files ending in {", ".join(IMAGE_EXTENSIONS)}; put the images of '
                      f'each class in {root}/<class>/')
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> dict:
    with open(os.path.join(self.root, self.files[i]), 'rb') as f:
      return {'image': f.read(), 'label': int(self.labels[i])}

  def describe(self, i: int) -> str:
    return f'image file {os.path.join(self.root, self.files[i])}'


def folder(data_dir: str, split: str, train_split: str) -> FolderSource:
  """The image folder `data_dir/<split>/<class>/<image>`; classes are those of `train_split`."""
  if not data_dir:
    raise ValueError("data.name='folder' needs data.data_dir: a root holding <split>/<class>/<image>")
  root, train_root = os.path.join(data_dir, split), os.path.join(data_dir, train_split)
  for r in (root, train_root):
    if not os.path.isdir(r):
      raise FileNotFoundError(f'image folder {r} not found; expected {data_dir}/<split>/<class>/<image>')
  classes = sorted(c for c in os.listdir(train_root) if os.path.isdir(os.path.join(train_root, c)))
  if not classes:
    raise DataError(f'no class folders in {train_root}; put the images of each class in a folder of '
                    f'its own: {train_root}/<class>/<image>')
  return FolderSource(root, classes)


def prepare_command(name: str, data_dir: str | None) -> str:
  """The command that prepares the TFDS dataset `name` under `data_dir`."""
  cmd = f'python -m cnn_jax.data.prepare {name}'
  if name.startswith('imagenet2012'):
    cmd += ' --manual_dir=<folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>'
  return cmd + (f' --data_dir={data_dir}' if data_dir else '')


class TfdsSource:
  """A prepared TFDS dataset (array_record) read with `tfds.data_source`; images stay encoded."""

  def __init__(self, name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'TFDS dataset {name!r} is not prepared in {builder.data_dir} (searched data_dir='
          f'{data_dir or tfds.core.constants.DATA_DIR}). Prepare it once with:\n  '
          f'{prepare_command(name, data_dir)}')
    features = builder.info.features
    if 'image' not in features or 'label' not in features:
      raise ValueError(f'TFDS dataset {name!r} has features {list(features)}; image classification '
                       "needs 'image' and 'label'")
    self.name, self.split = name, split
    self.num_classes = features['label'].num_classes
    self.labels = None
    self._source = builder.as_data_source(
        split=split, decoders={'image': tfds.decode.SkipDecoding()})

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    r = self._source[i]
    return {'image': r['image'], 'label': int(r['label'])}

  def describe(self, i: int) -> str:
    return f'TFDS {self.name} split {self.split!r} record {i}'


def get_source(data_config, split: str):
  """The source of `split` for `data_config` (see config.default_data_config)."""
  name = data_config.name
  if name in ('digits', 'fashion_mnist'):
    # The embedded datasets take integer slices as TFDS does, e.g. 'train[:2000]'.
    sliced = re.fullmatch(r'(\w+)\[(-?\d*):(-?\d*)\]', split)
    base = sliced.group(1) if sliced else split
    source = digits(base) if name == 'digits' else fashion_mnist(base, data_config.data_dir)
    if sliced:
      source = source.slice(*(int(g) if g else None for g in sliced.group(2, 3)))
  elif name == 'folder':
    source = folder(data_config.data_dir, split, data_config.train_split)
  else:
    source = TfdsSource(name, split, data_config.data_dir)
  if not len(source):
    raise DataError(f'split {split!r} of {name} has no examples; choose another split '
                    '(data.train_split / data.eval_split)')
  return source
