"""Image transforms as the papers define them: decode, crop, resize, (flip, lighting), normalise.

Every transform maps an encoded image (bytes) or a uint8 array (H, W, C), C in {1, 3}, to a float32
(size, size, 3) array normalised as `(x / 255 - mean) / std`. Sizes scale with the crop: `size` is the
network input and `resize = round(size / crop_fraction)` the short side the papers rescale to (256 for
224 crops), so the papers' numbers hold exactly at 224 and scale proportionally elsewhere (digits at
32 px, say). Gray (digits, Fashion-MNIST, grayscale JPEGs), CMYK, palette and PNG images all decode to RGB.

Speed: a transform first computes its crop box in the coordinates of the stored image, then decodes
(JPEGs with libjpeg-turbo through simplejpeg: the same pixels as PIL, about 1.5x faster) at a reduced
DCT scale (1/2, 1/4 or 1/8) as far as the box keeps at least the output's resolution, and resamples
the box to the output size in one step:
- eval (and train with `antialias=True`): PIL's antialiased bilinear on the exact, sub-pixel box, as
  torchvision's Resize(antialias=True) + CenterCrop;
- train by default: OpenCV's plain bilinear on the box rounded to whole pixels, as TensorFlow's and
  DALI's ImageNet pipelines resize (no antialiasing); 7x faster than PIL's filter, which on 2 cores
  is the difference between ~300 and ~450 train images/s per core (benchmarks/input_pipeline.py).
"""

from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
import simplejpeg

# The loader's parallelism is grain's worker processes (and its read threads): OpenCV's own thread
# pool would only compete with them for the same cores.
cv2.setNumThreads(1)

# PCA of ImageNet training-set RGB pixels on the [0, 1] scale, used for AlexNet's colour augmentation
# (Krizhevsky et al. 2012, §4.1). The paper does not publish them; these are the values of
# facebook/fb.resnet.torch, datasets/imagenet.lua (`pca`), also used by its `Lighting` transform.
# Columns of PCA_EIGVEC are the eigenvectors p_i, PCA_EIGVAL the eigenvalues lambda_i.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)
LIGHTING_STD = 0.1  # sigma of the alpha_i ~ N(0, 0.1), AlexNet §4.1

AUGMENTATIONS = ('alexnet', 'vgg', 'inception', 'resnet', 'none')


class CorruptImageError(ValueError):
  """An image that cannot be decoded; the message names the record."""


Box = tuple[float, float, float, float]  # (left, upper, right, lower) in stored-image pixels


def _dct_scale(w: int, h: int, box: Box, out: int) -> int:
  """The largest k in (8, 4, 2, 1) such that the image decoded at 1/k has >= `out` pixels across the box."""
  bw, bh = box[2] - box[0], box[3] - box[1]
  return next((k for k in (8, 4, 2) if bw / k >= out and bh / k >= out), 1)


def _decode_pil(data, box_of: Callable[[int, int], Box], out: int) -> tuple[np.ndarray, Box]:
  """`decode` with PIL, for what simplejpeg does not read: PNG, GIF, ... and JPEGs that libjpeg-turbo's
  strict mode rejects (PIL decodes them if it can, or raises the error that names the record)."""
  img = Image.open(io.BytesIO(data))
  w, h = img.size
  box = box_of(w, h)
  k = _dct_scale(w, h, box, out)
  if img.format == 'JPEG' and k > 1:
    drafted = img.draft('RGB', (w // k, h // k))
    if drafted:  # decoded at 1/k: the returned box (0, 0, w/k, h/k) gives k exactly
      f = drafted[1][2] / w
      box = tuple(v * f for v in box)
  if img.mode not in ('RGB', 'L'):  # CMYK, palette, RGBA, 16-bit ... -> RGB
    img = img.convert('RGB')
  return np.asarray(img), box


def decode(data, box_of: Callable[[int, int], Box], out: int) -> tuple[np.ndarray, Box]:
  """The pixels of an encoded image or uint8 array, (H, W, 3) RGB or (H, W) gray, and the box
  `box_of(width, height)` of the stored image in them, decoded at the smallest DCT scale that keeps
  `out` pixels across the box (JPEG only)."""
  if isinstance(data, np.ndarray):
    pixels = data[..., 0] if data.shape[-1] == 1 else data
    return pixels, box_of(pixels.shape[1], pixels.shape[0])
  try:
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
  except ValueError:  # not a JPEG
    return _decode_pil(data, box_of, out)
  box = box_of(w, h)
  k = _dct_scale(w, h, box, out)
  try:
    pixels = simplejpeg.decode_jpeg(data, 'RGB', min_width=math.ceil(w / k),
                                    min_height=math.ceil(h / k))
  except ValueError:  # a warning in strict mode: truncated data, extraneous bytes, ...
    return _decode_pil(data, lambda *_: box, out)
  return pixels, tuple(v / k for v in box)


def resample(pixels: np.ndarray, box: Box, out: int, antialias: bool) -> np.ndarray:
  """`box` of `pixels` resized to uint8 RGB (out, out, 3): PIL's antialiased bilinear on the exact box,
  or OpenCV's plain bilinear on the box rounded to whole pixels."""
  if antialias:
    res = np.asarray(Image.fromarray(pixels).resize((out, out), Image.Resampling.BILINEAR, box=box))
  else:
    x0, y0 = round(box[0]), round(box[1])
    x1, y1 = max(round(box[2]), x0 + 1), max(round(box[3]), y0 + 1)
    res = cv2.resize(pixels[y0:y1, x0:x1], (out, out), interpolation=cv2.INTER_LINEAR)
  return np.stack([res] * 3, axis=-1) if res.ndim == 2 else res


def centre_crop(data, resize: float, size: int) -> np.ndarray:
  """uint8 (size, size, 3): the short side resized to `resize`, the centre `size` square (eval)."""
  pixels, box = decode(data, lambda w, h: centre_box(w, h, resize, size), size)
  return resample(pixels, box, size, antialias=True)


def short_side_box(w: int, h: int, resize: float, size: int, x: float, y: float) -> Box:
  """The box of a `size` crop at (x, y) of the image rescaled so that its short side is `resize`."""
  s = resize / min(w, h)
  return (x / s, y / s, (x + size) / s, (y + size) / s)


def centre_box(w: int, h: int, resize: float, size: int) -> Box:
  """Eval: resize the short side to `resize`, centre crop `size` (torchvision Resize + CenterCrop)."""
  s = resize / min(w, h)
  return short_side_box(w, h, resize, size, (w * s - size) / 2, (h * s - size) / 2)


def alexnet_box(w, h, resize, size, rng) -> Box:
  """AlexNet §2/§4.1: short side to `resize` (256), central resize x resize square, random size crop."""
  s = resize / min(w, h)
  x0, y0 = (w * s - resize) / 2, (h * s - resize) / 2
  dx, dy = rng.integers(0, resize - size, endpoint=True, size=2)
  return short_side_box(w, h, resize, size, x0 + dx, y0 + dy)


def scale_jitter_box(w, h, s_min, s_max, size, rng) -> Box:
  """VGG §3.1 / ResNet §3.4: short side S uniform in [s_min, s_max], random size crop of the whole image."""
  s_short = int(rng.integers(s_min, s_max, endpoint=True))
  s = s_short / min(w, h)
  x = rng.integers(0, max(0, math.floor(w * s) - size), endpoint=True)
  y = rng.integers(0, max(0, math.floor(h * s) - size), endpoint=True)
  return short_side_box(w, h, s_short, size, x, y)


def random_resized_box(w, h, rng, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Box:
  """GoogLeNet §6: a patch of 8-100 % of the area, aspect ratio in [3/4, 4/3] (log-uniform).

  Ten tries as torchvision's RandomResizedCrop; then the largest centred box within the ratio range.
  """
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = w * h * rng.uniform(*area)
    r = math.exp(rng.uniform(*log_ratio))
    cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
    if 0 < cw <= w and 0 < ch <= h:
      x, y = rng.integers(0, w - cw, endpoint=True), rng.integers(0, h - ch, endpoint=True)
      return (x, y, x + cw, y + ch)
  r = w / h
  cw, ch = (w, round(w / ratio[0])) if r < ratio[0] else (
      (round(h * ratio[1]), h) if r > ratio[1] else (w, h))
  return ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)


def lighting_shift(rng) -> np.ndarray:
  """AlexNet §4.1 PCA colour noise: the RGB shift sum_i p_i alpha_i lambda_i, alpha_i ~ N(0, 0.1),
  added to every pixel (on the [0, 1] scale), redrawn for every image."""
  alpha = rng.normal(0.0, LIGHTING_STD, size=3).astype(np.float32)
  return PCA_EIGVEC @ (alpha * PCA_EIGVAL)


class Transform:
  """Decode, crop, resize, (flip, lighting), normalise: the train or eval transform of one recipe.

  `__call__(data, rng)` returns float32 (size, size, 3); `ten_crop(data)` returns (10, size, size, 3):
  the four corners and the centre of the central resize x resize square (AlexNet §4.1 "test time"),
  then the same five flipped horizontally. `antialias` chooses the train transforms' resampling (see
  the module docstring); eval always resamples with antialiasing.
  """

  def __init__(self, augment: str | None, size: int, resize: int, mean: Sequence[float],
               std: Sequence[float], antialias: bool = False, eval_geometry: str = 'exact'):
    if augment is not None and augment not in AUGMENTATIONS:
      raise ValueError(f'unknown augment {augment!r}; choose one of {AUGMENTATIONS}')
    if resize < size:
      raise ValueError(f'resize {resize} < crop {size}: crop_fraction must be <= 1')
    self.augment = None if augment == 'none' else augment
    self.antialias = antialias or self.augment is None
    self.size, self.resize = size, resize
    self.eval_geometry = eval_geometry
    self.std = np.asarray(std, np.float32)
    # Full-size arrays: numpy is slow at broadcasting over a last axis of 3.
    self.scale = np.tile(np.float32(1 / 255) / self.std, (size, size, 1))
    self.offset = np.tile(-np.asarray(mean, np.float32) / self.std, (size, size, 1))

  def _box(self, w: int, h: int, rng) -> Box:
    size, resize, a = self.size, self.resize, self.augment
    if a is None:
      return centre_box(w, h, resize, size)
    if a == 'alexnet':
      return alexnet_box(w, h, resize, size, rng)
    if a == 'vgg':  # S in [256, 512] at 224
      return scale_jitter_box(w, h, resize, 2 * resize, size, rng)
    if a == 'resnet':  # S in [256, 480] at 224
      return scale_jitter_box(w, h, resize, round(resize * 480 / 256), size, rng)
    return random_resized_box(w, h, rng)

  def __call__(self, data, rng: np.random.Generator | None = None) -> np.ndarray:
    pixels, box = decode(data, lambda w, h: self._box(w, h, rng), self.size)
    img = resample(pixels, box, self.size, self.antialias)
    if self.augment is not None and rng.random() < 0.5:
      img = img[:, ::-1]
    offset = self.offset
    if self.augment in ('alexnet', 'vgg', 'resnet'):  # VGG §3.1 and ResNet §3.4 reuse AlexNet's
      offset = offset + np.tile(lighting_shift(rng) / self.std, (self.size, self.size, 1))
    return np.multiply(img, self.scale, dtype=np.float32) + offset

  def ten_crop(self, data) -> np.ndarray:
    r, size = self.resize, self.size
    # Normalise the resize x resize square once, then copy the views out of it.
    square = np.multiply(centre_crop(data, r, r), self.scale[:1, :1], dtype=np.float32)
    square += self.offset[:1, :1]
    e, c = r - size, (r - size) // 2
    views = np.empty((10, size, size, 3), np.float32)
    for i, (x, y) in enumerate(((0, 0), (e, 0), (0, e), (e, e), (c, c))):
      views[i] = square[y:y + size, x:x + size]
      views[i + 5] = views[i, :, ::-1]
    return views


def decode_check(fn: Callable, describe: Callable[[], str]):
  """Run `fn()`, turning any decoding failure into a CorruptImageError naming the record."""
  try:
    return fn()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise CorruptImageError(f'cannot decode the image of {describe()}: {type(e).__name__}: {e}') from e
