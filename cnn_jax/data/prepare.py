r"""Prepare a TFDS dataset once as array_record files, which the loader then reads without TensorFlow.

ImageNet 2012 from the tar files of image-net.org, with TFDS's official `imagenet2012` builder:

  python -m cnn_jax.data.prepare imagenet2012 --manual_dir=~/ilsvrc --data_dir=~/tensorflow_datasets

`--manual_dir` holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (ILSVRC2012_img_test.tar
too, optionally). Any other TFDS dataset is downloaded and prepared by its builder:
`python -m cnn_jax.data.prepare cifar10 --data_dir=...`. Needs TensorFlow: `pip install -r
requirements-prepare.txt`. Shows a progress bar per split. A missing, foreign or truncated tar file is
reported before TensorFlow starts, as one line naming it (cnn_jax.errors).
"""

from __future__ import annotations

import os
import tarfile

from absl import app
from absl import flags

from cnn_jax import errors

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'folder of the manually downloaded files')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir to write to (default ~/tensorflow_datasets)')

IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


def check_tar(path: str) -> None:
  """Fail, naming `path`, unless it is a tar archive whose every member is whole.

  Reads only the member headers, seeking over the data (seconds for ImageNet's 50,000 validation
  images), and so catches a foreign file or a download cut short inside a member before the hours of
  preparation; an archive cut exactly between two members looks whole.
  """
  try:
    with tarfile.open(path, 'r:') as tar:
      count = sum(1 for _ in tar)
  except (tarfile.TarError, EOFError) as e:
    raise errors.UserError(f'{path} is not a tar archive or is cut short ({e}): download it '
                           'again (image-net.org, ILSVRC 2012) and check its size and md5sum') from e
  if not count:
    raise errors.UserError(f'{path} is an empty tar archive: download it again (image-net.org, '
                           'ILSVRC 2012)')


def check_manual_dir(name: str, manual_dir: str | None) -> None:
  """Fail early, naming the file, when ImageNet's tar files are missing, not tars or truncated."""
  if not name.startswith('imagenet2012'):
    return
  if not manual_dir:
    raise FileNotFoundError(f'{name} needs --manual_dir=<folder with {" and ".join(IMAGENET_TARS)}>')
  paths = [os.path.join(os.path.expanduser(manual_dir), tar) for tar in IMAGENET_TARS]
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} not found: --manual_dir must hold {" and ".join(IMAGENET_TARS)} '
                              '(from image-net.org, ILSVRC 2012)')
  for path in paths:
    check_tar(path)


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            progress: bool = True):
  """Build `name` as array_record under `data_dir`; returns the TFDS builder."""
  check_manual_dir(name, manual_dir)
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError('preparing a TFDS dataset needs TensorFlow: '
                      'pip install -r requirements-prepare.txt') from e
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if progress:
    tfds.display_progress_bar(True)
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None))
  return builder


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m cnn_jax.data.prepare NAME [--manual_dir=..] [--data_dir=..]')
  builder = prepare(argv[1], _DATA_DIR.value, _MANUAL_DIR.value)
  splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'prepared {builder.info.full_name} in {builder.data_dir} ({splits})')


if __name__ == '__main__':
  errors.run(main)
