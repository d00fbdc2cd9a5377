r"""Input-pipeline throughput on ImageNet-like JPEGs (images/s), for the train and eval transforms.

Generates `--num_images` photo-like JPEGs (500x375, about 110 KB, like the average ImageNet image)
in a temporary image folder, then measures, after a warm-up:
  1. one thread, no loader: plain PIL and simplejpeg decodes (baselines), each train transform (with
     the default fast resize, and for inception also with train_antialias=True) and the eval transform;
  2. the full loader (`make_loader`, folder source) in the main process (its read threads) and with
     1 and 2 grain worker processes.
Run: python -m benchmarks.input_pipeline [--num_images=256 --batch_size=32 --workers=0,1,2]
On a busy machine the numbers drop for all rows alike; compare them with the decode baseline.
"""

from __future__ import annotations

import io
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import simplejpeg

from cnn_jax import data
from cnn_jax.data import transforms
from cnn_jax.models.registry import IMAGENET_MEAN, IMAGENET_STD

_NUM_IMAGES = flags.DEFINE_integer('num_images', 256, 'JPEGs to generate')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'loader batch size')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'],
                             'grain worker counts to measure (0: read threads in the main process)')
_SECONDS = flags.DEFINE_float('seconds', 4.0, 'time per measurement')
_AUGMENT = flags.DEFINE_list('loader_augment', ['inception', 'alexnet'],
                             'train augmentations measured through the loader')


def photo_jpeg(seed: int, w: int = 500, h: int = 375) -> bytes:
  """A smooth random image with sensor-like noise, JPEG quality 90: about 110 KB at 500x375."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 20, w // 20, 3), dtype=np.uint8)
  img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
  img = np.clip(img + rng.normal(0, 22, img.shape), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, 'JPEG', quality=90)
  return buf.getvalue()


def write_folder(root: str, n: int, classes: int = 8) -> float:
  """`root/{train,val}/<class>/<i>.JPEG`; val repeats train 8 times (hard links), so that one eval
  pass lasts long enough to measure. Returns the mean file size in KB."""
  sizes = []
  for i in range(n):
    name = os.path.join(f'class{i % classes}', f'{i}.JPEG')
    os.makedirs(os.path.join(root, 'train', f'class{i % classes}'), exist_ok=True)
    blob = photo_jpeg(i)
    sizes.append(len(blob))
    with open(os.path.join(root, 'train', name), 'wb') as f:
      f.write(blob)
    for k in range(8):
      os.makedirs(os.path.join(root, 'val', f'class{i % classes}'), exist_ok=True)
      os.link(os.path.join(root, 'train', name), os.path.join(root, 'val', f'{name[:-5]}_{k}.JPEG'))
  return float(np.mean(sizes)) / 1024


def rate(fn, items, seconds) -> float:
  """Items per second of `fn` over `items`, repeated for about `seconds`, after one warm-up pass."""
  for x in items[:8]:
    fn(x)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    for x in items:
      fn(x)
    done += len(items)
  return done / (time.perf_counter() - start)


def loader_rate(cfg, split, train, seconds) -> float:
  """Images/s of make_loader after its first batch (worker start-up excluded)."""
  it = data.make_loader(cfg, split, train=train, global_batch_size=_BATCH.value, seed=0,
                        image_size=224, process_index=0, process_count=1)
  next(it)
  done, start = 0, time.perf_counter()
  try:
    while time.perf_counter() - start < seconds:
      done += len(next(it)['label'])
  except StopIteration:
    pass
  elapsed = time.perf_counter() - start
  it.close()  # stops grain's workers and frees their shared memory
  return done / elapsed


def main(argv):
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as root:
    kb = write_folder(root, _NUM_IMAGES.value)
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, 'train')) for f in fs]
    blobs = [open(f, 'rb').read() for f in files]
    print(f'{len(blobs)} JPEGs (train; val: 8 copies of each), 500x375, mean {kb:.0f} KB; {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f}')
    rng = np.random.default_rng(0)
    s = _SECONDS.value
    rows.append(('PIL decode only (baseline)', '1 thread',
                 rate(lambda b: Image.open(io.BytesIO(b)).convert('RGB').load(), blobs, s)))
    rows.append(('simplejpeg decode only (baseline)', '1 thread', rate(simplejpeg.decode_jpeg, blobs, s)))
    for augment in ('alexnet', 'vgg', 'resnet', 'inception', 'none'):
      t = transforms.Transform(augment, 224, 256, IMAGENET_MEAN, IMAGENET_STD)
      name = f'train transform {augment}' if augment != 'none' else 'eval transform (256 -> 224)'
      rows.append((name, '1 thread', rate(lambda b, t=t: t(b, rng), blobs, s)))
    t = transforms.Transform('inception', 224, 256, IMAGENET_MEAN, IMAGENET_STD, antialias=True)
    rows.append(('train transform inception, train_antialias=True', '1 thread',
                 rate(lambda b: t(b, rng), blobs, s)))
    t = transforms.Transform(None, 224, 256, IMAGENET_MEAN, IMAGENET_STD)
    rows.append(('eval 10-crop (images, not views)', '1 thread', rate(t.ten_crop, blobs, s)))
    cfg = data.default_data_config()
    cfg.name, cfg.data_dir, cfg.eval_split = 'folder', root, 'val'
    for workers in map(int, _WORKERS.value):
      cfg.num_workers = workers
      parallelism = f'{workers} worker(s)' if workers else f'{cfg.read_threads} threads, no worker'
      for augment in _AUGMENT.value:
        cfg.augment = augment
        rows.append((f'loader train ({augment})', parallelism,
                     loader_rate(cfg, 'train', True, s)))
      rows.append(('loader eval', parallelism, loader_rate(cfg, 'val', False, s)))
  print('\n| pipeline | parallelism | images/s |\n| --- | --- | ---: |')
  for name, par, r in rows:
    print(f'| {name} | {par} | {r:.0f} |')


if __name__ == '__main__':
  app.run(main)
