"""`python -m cnn_jax.tools.predict --workdir DIR image.jpg ...`: top-5 classes of each image.

Krizhevsky et al. 2012, Figure 4 (left): each image with its true label under it and the five
most probable classes as bars, the true class's bar in red when it is among them (§6.1).

Images go through the run's eval transform (cnn_jax.data: short side to image_size /
crop_fraction, centre crop, the model's mean/std). Class names: the digits 0-9; the folder names of
a 'folder' dataset; the label names TFDS ships for its datasets (for imagenet2012 the WordNet ids of
its labels.txt), shown as readable names from torchvision's ImageNet weights metadata when
torchvision is installed. The true label is known when the image's folder is a class name (an
ImageNet train synset folder, or a 'folder' dataset), or for ImageNet validation files
ILSVRC2012_val_%08d.JPEG, from TFDS's validation_labels.txt.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cnn_jax import data
from cnn_jax import load
from cnn_jax.data import sources, transforms
from cnn_jax.tools import common

CELL_INCHES = (3.2, 5.0)  # one image and its bars; the PNG is 320 x 500 px per image at DPI
DPI = 100
MAX_COLUMNS = 4
_SYNSET = re.compile(r'n\d{8}')
_IMAGENET_VAL = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG', re.IGNORECASE)


@functools.cache
def _tfds_label_names(name: str, data_dir: str | None) -> tuple[str, ...]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tuple(tfds.builder(name, data_dir=data_dir).info.features['label'].names)


def readable_imagenet_names(synsets: Sequence[str]) -> list[str]:
  """torchvision's English names for the 1000 ImageNet classes, else the WordNet ids themselves."""
  try:
    from torchvision.models import AlexNet_Weights  # pylint: disable=g-import-not-at-top
  except ImportError:
    return list(synsets)
  return list(AlexNet_Weights.IMAGENET1K_V1.meta['categories'])


def class_names(data_config: dict | None, num_classes: int) -> list[str]:
  """Names of the classes a model predicts: from its dataset, ImageNet's when none is recorded."""
  name = data_config['name'] if data_config else 'imagenet2012'
  if name == 'digits':
    names = [str(i) for i in range(10)]
  elif name == 'folder':
    names = sources.folder(data_config['data_dir'], data_config['train_split'],
                           data_config['train_split']).classes
  else:  # a TFDS dataset, or the IDX files of Fashion-MNIST, labelled as TFDS's fashion_mnist
    tfds_name = 'fashion_mnist' if name == 'fashion_mnist' else name
    names = list(_tfds_label_names(tfds_name, None if name == 'fashion_mnist'
                                   else data_config and data_config.get('data_dir')))
    if len(names) == 1000 and all(_SYNSET.fullmatch(n) for n in names):
      names = readable_imagenet_names(names)
  if len(names) != num_classes:
    raise ValueError(f'the model predicts {num_classes} classes but dataset {name!r} has '
                     f'{len(names)} names')
  return names


def imagenet_synsets() -> list[str]:
  return list(_tfds_label_names('imagenet2012', None))


@functools.cache
def _imagenet_validation_synsets() -> list[str]:
  import importlib.resources  # pylint: disable=g-import-not-at-top
  path = importlib.resources.files('tensorflow_datasets.datasets.imagenet2012')
  return (path / 'validation_labels.txt').read_text().split()


def true_label(path: str, data_config: dict | None, names: Sequence[str]) -> int | None:
  """The class index of `path` when its folder or file name tells it, else None."""
  folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
  if folder in names:
    return list(names).index(folder)
  imagenet = data_config is None or data_config['name'].startswith('imagenet2012')
  if not imagenet:
    return None
  synsets = imagenet_synsets()
  match = _IMAGENET_VAL.fullmatch(os.path.basename(path))
  if match:
    validation = _imagenet_validation_synsets()
    number = int(match.group(1))
    return synsets.index(validation[number - 1]) if 1 <= number <= len(validation) else None
  match = _SYNSET.match(folder) or _SYNSET.match(os.path.basename(path))
  if match and match.group(0) in synsets:
    return synsets.index(match.group(0))
  return None


def predict(network: load.Network, paths: Sequence[str]):
  """(probabilities (N, classes), display images uint8 (N, 256, 256, 3)) of the image files."""
  config = ml_collections.ConfigDict(network.source.data_config or {})
  mean, std, crop, _ = data.model_preprocessing(config, network.source.name)
  size = network.source.image_size
  transform = transforms.Transform(None, size, round(size / crop), mean, std)
  images, shown = [], []
  for path in paths:
    with open(path, 'rb') as f:
      encoded = f.read()
    images.append(transforms.decode_check(lambda: transform(encoded), lambda: path))
    shown.append(transforms.centre_crop(encoded, 256 / crop, 256))
  graphdef, state = nnx.split(network.model())
  logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, np.stack(images))
  return np.asarray(jax.nn.softmax(logits.astype(jnp.float32))), np.stack(shown)


def draw(output: str, paths, shown, probs, names, labels, top: int = 5) -> tuple[int, int]:
  """The Figure-4 style PNG; returns its (width, height) in pixels."""
  plt = common.pyplot()
  n = len(paths)
  cols = min(n, MAX_COLUMNS)
  rows = math.ceil(n / cols)
  fig = plt.figure(figsize=(CELL_INCHES[0] * cols, CELL_INCHES[1] * rows), dpi=DPI)
  grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1.6] * rows, hspace=0.3, wspace=0.1,
                          left=0.05 / cols, right=1 - 0.05 / cols, top=1 - 0.2 / rows,
                          bottom=0.2 / rows)
  for i in range(n):
    r, c = divmod(i, cols)
    ax = fig.add_subplot(grid[2 * r, c])
    ax.imshow(shown[i])
    ax.set_xticks([])
    ax.set_yticks([])
    label = labels[i]
    ax.set_title(os.path.basename(paths[i]), fontsize=8)
    ax.set_xlabel(names[label] if label is not None else '(true label unknown)', fontsize=9,
                  fontweight='bold')
    order = np.argsort(-probs[i])[:top]
    bars = fig.add_subplot(grid[2 * r + 1, c])
    colours = ['tab:red' if k == label else 'tab:blue' for k in order]
    bars.barh(range(len(order)), probs[i][order], color=colours, alpha=0.45)
    for y, k in enumerate(order):  # names over the bars, as in the paper's figure
      bars.text(0.02, y, f'{names[k][:28]}  {probs[i][k]:.2f}', va='center', fontsize=8)
    bars.set_yticks([])
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.tick_params(axis='x', labelsize=7)
  fig.savefig(output, dpi=DPI)
  width, height = (round(v * DPI) for v in fig.get_size_inches())
  plt.close(fig)
  return width, height


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('images', nargs='+', help='image files (JPEG, PNG, ...)')
  parser.add_argument('--workdir', required=True,
                      help='a train.py workdir, or a weights directory from cnn_jax.convert')
  parser.add_argument('--step', type=int, help='checkpoint step (default: the latest)')
  parser.add_argument('--output', help='PNG path (default: WORKDIR/predictions.png)')
  parser.add_argument('--top', type=int, default=5, help='classes shown per image')
  args = parser.parse_args(argv)
  missing = [p for p in args.images if not os.path.isfile(p)]
  if missing:
    parser.error(f'no such image file(s): {", ".join(missing)}')

  network = load.restore(load.locate(args.workdir, step=args.step))
  source = network.source
  names = class_names(source.data_config, source.num_classes)
  labels = [true_label(p, source.data_config, names) for p in args.images]
  probs, shown = predict(network, args.images)
  top = min(args.top, source.num_classes)
  print(f'{network.description}, {source.image_size} px')
  for path, p, label in zip(args.images, probs, labels):
    print(f'{path}: true label {names[label] if label is not None else "unknown"}')
    for rank, k in enumerate(np.argsort(-p)[:top], 1):
      print(f'  {rank}. {p[k]:.4f}  {names[k]}{"  <- true" if k == label else ""}')
  output = args.output or os.path.join(args.workdir, 'predictions.png')
  width, height = draw(output, args.images, shown, probs, names, labels, top)
  print(f'-> {output} ({width}x{height} px)', file=sys.stderr)


if __name__ == '__main__':
  main()
