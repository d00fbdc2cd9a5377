"""Faulty data ends the run as one line `error: <problem and fix>`, at start-up where it can be seen.

The real commands run in subprocesses on tiny PNG folders (`data.name='folder'`) or the embedded
digits (labels 0..9, scikit-learn's `load_digits`). Folder faults, empty splits and labels beyond
num_classes fail before compiling (no 'compiled' log line); skip_corrupt on unreadable data stops by
itself, naming files, and Ctrl-C stops a run at once (formerly the retry loop spun forever in the
read threads, which kept the process alive after Ctrl-C).
"""

import os
import queue
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from PIL import Image

from test_faults_user import QUICK, REPO, one_line_error, run_cli, train

COMPILED = 'compiled train and eval steps'  # trainer's log line after compiling


def make_folder(root, layout, corrupt=0):
  """root/<split>/<class>/ with `layout[split][class]` 8x8 PNGs, and `corrupt` bad ones per class."""
  for split, classes in layout.items():
    for k, (cls, n) in enumerate(classes.items()):
      d = root / split / cls
      d.mkdir(parents=True)
      for i in range(n):
        Image.new('RGB', (8, 8), (30 * i, 120 * k, 60)).save(d / f'{i}.png')
      for i in range(corrupt):
        (d / f'bad{i}.png').write_bytes(b'<html>not a png</html>')
  return root


def train_folder(tmp_path, root, *args, **kwargs):
  return train(tmp_path, f'--config={QUICK}', '--config.data.name=folder',
               f'--config.data.data_dir={root}', *args, **kwargs)


TWO = {'a': 2, 'b': 2}


@pytest.mark.parametrize('layout, words', [
    ({'train': {}, 'test': TWO}, ['no class folders in', 'train/<class>/<image>']),
    ({'train': {'a': 0, 'b': 0}, 'test': TWO}, ['no images in', 'train: its class folders (a, b)']),
    ({'train': TWO, 'test': {'a': 0, 'b': 0}}, ['no images in', 'test: its class folders (a, b)']),
    ({'train': TWO, 'test': {'a': 2, 'b': 2, 'c': 2}},
     ['class folder', 'test/c is not among the 2 class folders of the train split']),
], ids=['no_class_folders', 'no_train_images', 'empty_eval_split', 'eval_class_not_in_train'])
def test_folder_faults_fail_at_start_up(tmp_path, layout, words):
  root = make_folder(tmp_path / 'images', layout)
  if not layout['train']:  # an image, but no class folder
    (root / 'train').mkdir()
    Image.new('RGB', (8, 8)).save(root / 'train' / 'loose.png')
  out = train_folder(tmp_path, root)
  one_line_error(out, *words)
  assert COMPILED not in out.stderr  # found before compiling, not at the first evaluation


def test_labels_beyond_num_classes(tmp_path):
  out = train(tmp_path, f'--config={QUICK}', '--config.num_classes=5')
  # digits' train split (the first 1437 of load_digits) holds label 9 first at record 9.
  one_line_error(out, 'digits/train record 9', 'label 9', 'num_classes=5',
                 '--config.num_classes=10')
  assert COMPILED not in out.stderr


def test_eval_of_an_empty_split(tmp_path):
  """eval.py used to print `n=0 ... 100 %` and exit 0."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from cnn_jax import models  # pylint: disable=g-import-not-at-top
  from cnn_jax.convert import weights  # pylint: disable=g-import-not-at-top
  root = make_folder(tmp_path / 'images', {'train': TWO, 'test': {'a': 0, 'b': 0}})
  # Weights of the right shapes (their values are never read: the split is refused first).
  shapes = nnx.state(nnx.eval_shape(lambda: models.create('resnet_tiny', 2)), weights.WEIGHTS)
  weights.save(str(tmp_path / 'w'), 'resnet_tiny',
               jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes), {'num_classes': 2})
  out = run_cli('eval.py', f'--checkpoint={tmp_path / "w"}', f'--config={QUICK}',
                '--config.data.name=folder', f'--config.data.data_dir={root}', '--noprogress',
                '--compilation_cache=')
  one_line_error(out, 'no images in', f'{root / "test"}')
  assert 'n=0' not in out.stdout


def test_skip_corrupt_gives_up_on_unreadable_data(tmp_path, cache):
  root = make_folder(tmp_path / 'images', {'train': {'a': 0, 'b': 0}, 'test': TWO}, corrupt=3)
  out = train_folder(tmp_path, root, '--config.data.skip_corrupt=True',
                     f'--compilation_cache={cache}')
  last = one_line_error(out, 'data.skip_corrupt gave up', 'failed to decode',
                        f'image file {root / "train"}')
  assert last.count('bad') >= 2  # names a few of the files
  assert out.stderr.count('skip_corrupt: skipped') < 100  # bounded, not a log flood


def _lines(proc):
  """A queue of the process's output lines, read by a thread (so waiting for one can time out)."""
  lines = queue.Queue()

  def read():
    for line in proc.stdout:
      lines.put(line)
    lines.put(None)

  threading.Thread(target=read, daemon=True).start()
  return lines


def test_ctrl_c_stops_a_run_that_skips_corrupt_images(tmp_path, cache):
  root = make_folder(tmp_path / 'images', {'train': {'a': 4, 'b': 4}, 'test': TWO}, corrupt=2)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(
      [sys.executable, 'train.py', f'--config={QUICK}', '--config.data.name=folder',
       f'--config.data.data_dir={root}', '--config.data.skip_corrupt=True',
       '--config.num_train_steps=1000000', f'--workdir={tmp_path / "run"}',
       f'--compilation_cache={cache}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, seen = _lines(proc), []
  try:
    deadline = time.time() + 120
    # Wait until it trains (a logged train step: compiling is over, so Python handles the signal at
    # once) while skipping corrupt images (1 in 3).
    while not (any('skip_corrupt: skipped' in line for line in seen)
               and any('[train] step' in line for line in seen)):
      line = lines.get(timeout=max(deadline - time.time(), 0.1))
      assert line is not None, ''.join(seen)[-3000:]
      seen.append(line)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=15)
  finally:
    proc.kill()
  while (line := lines.get(timeout=10)) is not None:
    seen.append(line)
  output = ''.join(seen)
  assert proc.returncode == 130, output[-3000:]
  assert 'Traceback' not in output
  assert [line for line in seen if line.strip()][-1] == 'error: interrupted (Ctrl-C)\n'


@pytest.fixture(scope='module')
def good_tar(tmp_path_factory):
  path = tmp_path_factory.mktemp('tars') / 'ILSVRC2012_img_train.tar'
  with tarfile.open(path, 'w') as tar:
    tar.add(__file__, arcname='n01440764.tar')  # any member: only the archive is checked
  return path


@pytest.mark.parametrize('kind', ['truncated', 'not_a_tar'])
def test_prepare_names_a_bad_imagenet_tar(tmp_path, good_tar, kind):
  """A download cut short, or an error page saved under the tar's name (TensorFlow never starts)."""
  (tmp_path / good_tar.name).write_bytes(good_tar.read_bytes())
  val = tmp_path / 'ILSVRC2012_img_val.tar'
  if kind == 'truncated':
    with tarfile.open(val, 'w') as tar:
      for i in (1, 2):
        tar.add(__file__, arcname=f'ILSVRC2012_val_{i:08d}.JPEG')
    val.write_bytes(val.read_bytes()[:1536])  # header, then the first member cut short
  else:
    val.write_text('<html><body>403 Forbidden</body></html>\n' * 50)
  out = run_cli('-m', 'cnn_jax.data.prepare', 'imagenet2012', f'--manual_dir={tmp_path}',
                f'--data_dir={tmp_path / "tfds"}')
  one_line_error(out, str(val), 'not a tar archive or is cut short', 'download it again')
