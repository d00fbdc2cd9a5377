"""Every transform on every image size and kind: no size raises, every output has its exact shape
and is finite. Real ImageNet sizes such as 500x374 used to crash 10-crop ("box offset can't be
negative": the resize x resize square's box left the image by a float rounding)."""

import io
import itertools

import cv2
import numpy as np
import pytest
from PIL import Image

from cnn_jax.data import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Odd and even sides from below AlexNet's smallest input (63 px) to 801, around the crop (224) and
# the resize (256) and their halves and doubles (the DCT scales switch there).
GRID = (63, 64, 128, 199, 224, 255, 256, 257, 320, 413, 512, 801)
REAL = ((500, 374), (550, 412), (320, 239), (130, 98), (394, 500), (500, 375), (333, 500))
TINY = ((1, 1), (3, 5), (10, 7), (7, 10), (2, 1))
EXTREME = ((1000, 40), (40, 1000), (2000, 3), (3, 2000))
SIZES = tuple(itertools.product(GRID, GRID)) + REAL + TINY + EXTREME


def photo_array(w: int, h: int, seed: int = 0) -> np.ndarray:
  """A photo-like uint8 (h, w, 3) image: smooth colour gradients, a few sharp-edged blocks, noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(w, h, 1)
  f = rng.uniform(0.5, 3, (3, 2)).astype(np.float32)
  img = np.stack([128 + 90 * np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y) + c) for c in range(3)],
                 axis=-1)
  for _ in range(4):  # edges
    x0, y0 = rng.integers(0, w), rng.integers(0, h)
    img[y0:y0 + max(h // 3, 1), x0:x0 + max(w // 4, 1)] = rng.uniform(0, 255, 3)
  img += rng.normal(0, 8, img.shape).astype(np.float32)
  return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, fmt: str = 'JPEG', mode: str | None = None, **kw) -> bytes:
  buf = io.BytesIO()
  pil = Image.fromarray(img)
  (pil.convert(mode) if mode else pil).save(buf, fmt, **kw)
  return buf.getvalue()


@pytest.fixture(scope='module')
def jpegs():
  """One JPEG per size, encoded once for all the transforms."""
  return {(w, h): encode(photo_array(w, h, seed=w * 7919 + h), quality=90) for w, h in SIZES}


def _kinds(w=97, h=61):
  """Images that are not plain RGB JPEGs, as ImageNet and image folders hold them."""
  img = photo_array(w, h)
  ok, png16 = cv2.imencode('.png', (img[..., ::-1].astype(np.uint16) * 257))  # 16-bit RGB (BGR order)
  ok16, gray16 = cv2.imencode('.png', img[..., 0].astype(np.uint16) * 257)
  assert ok and ok16
  return {'gray JPEG': encode(img, mode='L'), 'CMYK JPEG': encode(img, mode='CMYK'),
          'PNG in .JPEG': encode(img, 'PNG'), 'palette PNG': encode(img, 'PNG', mode='P'),
          'RGBA PNG': encode(img, 'PNG', mode='RGBA'), 'LA PNG': encode(img, 'PNG', mode='LA'),
          '16-bit RGB PNG': png16.tobytes(), '16-bit gray PNG': gray16.tobytes(),
          'progressive JPEG': encode(img, progressive=True), 'uint8 array': img,
          'gray array (H, W, 1)': img[..., :1]}


# (name, size, resize, how to call it): every train augmentation with both resamplings, the eval
# centre crop and 10-crop in both geometries, at 224/256 and at Inception v3's 299/342.
TRANSFORMS = ([(f'{a} antialias={aa}', 224, 256, dict(augment=a, antialias=aa), False)
               for a in transforms.AUGMENTATIONS if a != 'none' for aa in (False, True)]
              + [(f'eval {g} {s}/{r}{" 10-crop" if ten else ""}', s, r,
                  dict(augment=None, eval_geometry=g), ten)
                 for g in transforms.EVAL_GEOMETRIES for s, r in ((224, 256), (299, 342))
                 for ten in (False, True)])


def _check(out, size, ten, what):
  shape = (10, size, size, 3) if ten else (size, size, 3)
  assert out.shape == shape and out.dtype == np.float32, (what, out.shape)
  assert np.isfinite(out).all(), what


@pytest.mark.parametrize('name,size,resize,kw,ten', TRANSFORMS, ids=[t[0] for t in TRANSFORMS])
def test_every_size_gives_the_exact_shape(jpegs, name, size, resize, kw, ten):
  del name
  kw = dict(kw)
  t = transforms.Transform(kw.pop('augment'), size, resize, MEAN, STD, **kw)
  rng = np.random.default_rng(0)
  for (w, h), blob in jpegs.items():
    out = t.ten_crop(blob) if ten else t(blob, rng)
    _check(out, size, ten, f'{w}x{h}')


@pytest.mark.parametrize('kind', list(_kinds()))
@pytest.mark.parametrize('w,h', [(97, 61), (3, 5), (1000, 40)])
def test_every_image_kind_and_transform(kind, w, h):
  blob = _kinds(w, h)[kind]
  rng = np.random.default_rng(1)
  for name, size, resize, kw, ten in TRANSFORMS:
    kw = dict(kw)
    t = transforms.Transform(kw.pop('augment'), size, resize, MEAN, STD, **kw)
    _check(t.ten_crop(blob) if ten else t(blob, rng), size, ten, f'{name} on {kind} {w}x{h}')


def test_ten_crop_of_the_reported_imagenet_sizes():
  """The sizes of the issue, at 224/256, each a real ImageNet JPEG size that raised before."""
  for g in transforms.EVAL_GEOMETRIES:
    t = transforms.Transform(None, 224, 256, MEAN, STD, eval_geometry=g)
    for w, h in ((500, 374), (550, 412), (320, 239), (130, 98), (394, 500)):
      _check(t.ten_crop(photo_array(w, h)), 224, True, f'{g} {w}x{h}')
