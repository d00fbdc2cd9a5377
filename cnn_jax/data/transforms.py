"""Image transforms as the papers define them: decode, crop, resize, (flip, colour), normalise.

Every transform maps an encoded image (bytes) or a uint8 array (H, W, C), C in {1, 3}, to a float32
(size, size, 3) array normalised as `(x / 255 - mean) / std`. Sizes scale with the crop: `size` is the
network input and `resize = round(size / crop_fraction)` the short side the papers rescale to (256 for
224 crops), so the papers' numbers hold exactly at 224 and scale proportionally elsewhere (digits at
32 px, say). Gray (digits, Fashion-MNIST, grayscale JPEGs), CMYK, palette, RGBA and PNG images all
decode to RGB; 16-bit PNGs keep their high byte (v >> 8), as PIL reads 16-bit colour PNGs.

Train augmentations: the table `AUGMENTATION_RECIPES` (name -> `Augmentation`, its recipe parts),
documented there, one row each with its paper; `AUGMENTATIONS` are its names ('none': the eval
transform). Each train augmentation flips horizontally with probability 1/2.

Eval geometry (`EVAL_GEOMETRIES`; the registry's ModelInfo.eval_geometry chooses):
- 'torchvision': torchvision's `Resize(resize)` (short side to `resize`, long side truncated to
  `int(resize * long / short)`, PIL's antialiased bilinear) + `CenterCrop(size)` (whole-pixel offsets
  `round((H' - size) / 2)`, `round((W' - size) / 2)`): the pixels torchvision-derived weights were
  evaluated on; 10-crop is torchvision's TenCrop(size) of the CenterCrop(resize)
  square. The image is decoded at full resolution, as torchvision's loader does.
- 'exact': the papers' protocol: the centre `size` square of the image rescaled to short side
  `resize` at its exact sub-pixel position; 10-crop (AlexNet §4.1): the four corners and the centre
  of the central resize x resize square, and their horizontal reflections.

Speed: a transform first computes its crop box in the coordinates of the stored image, then decodes
(JPEGs with libjpeg-turbo through simplejpeg: the same pixels as PIL, about 1.5x faster) at a reduced
DCT scale (1/2, 1/4 or 1/8) as far as the box keeps at least the output's resolution (train and
'exact' eval only: it changes pixels by a few grey levels), and resamples the box to the output size
in one step:
- eval (and train with `antialias=True`): PIL's antialiased bilinear on the exact, sub-pixel box
  ('torchvision' resizes the whole image, then crops, as torchvision does: its very pixels; for
  aspect ratios beyond 16:1 it resamples only the crop's box, within a grey level or two);
- train by default: OpenCV's plain bilinear on the box rounded to whole pixels, as TensorFlow's and
  DALI's ImageNet pipelines resize (no antialiasing); 7x faster than PIL's filter, which on 2 cores
  is the difference between ~300 and ~450 train images/s per core (benchmarks/input_pipeline.py).
Boxes are clamped to the image, so that rounding at its edges never leaves it (any size decodes).
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
from PIL import ImageEnhance
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

EVAL_GEOMETRIES = ('torchvision', 'exact')
# 'torchvision' eval resizes the whole image, unless that is over PANORAMA_AREA times resize^2 (a
# 3x2000 image would become 256x170666): then it resamples only the crop.
PANORAMA_AREA = 16
PHOTOMETRIC_RANGE = (0.5, 1.5)  # Howard 2013 §2.1: enhancement factors
TF_BRIGHTNESS_DELTA = 32 / 255  # TF-slim distort_color: random_brightness max_delta
TF_SATURATION_RANGE = (0.5, 1.5)  # TF-slim distort_color: random_saturation lower, upper


class CorruptImageError(ValueError):
  """An image that cannot be decoded; the message names the record."""


Box = tuple[float, float, float, float]  # (left, upper, right, lower) in stored-image pixels


def _dct_scale(w: int, h: int, box: Box, out: int | None) -> int:
  """The largest k in (8, 4, 2, 1) such that the image decoded at 1/k has >= `out` pixels across the
  box; 1 (full resolution) for `out=None`."""
  if out is None:
    return 1
  bw, bh = box[2] - box[0], box[3] - box[1]
  return next((k for k in (8, 4, 2) if bw / k >= out and bh / k >= out), 1)


def _decode_pil(data, box_of: Callable[[int, int], Box], out: int | None) -> tuple[np.ndarray, Box]:
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
  if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):  # 16-bit gray: the high byte, as PIL
    return (np.asarray(img).clip(0, 65535) >> 8).astype(np.uint8), box  # reads 16-bit colour PNGs
  if img.mode not in ('RGB', 'L'):  # CMYK, palette, RGBA, ... -> RGB
    img = img.convert('RGB')
  return np.asarray(img), box


def decode(data, box_of: Callable[[int, int], Box], out: int | None) -> tuple[np.ndarray, Box]:
  """The pixels of an encoded image or uint8 array, (H, W, 3) RGB or (H, W) gray, and the box
  `box_of(width, height)` of the stored image in them, decoded at the smallest DCT scale that keeps
  `out` pixels across the box (JPEG only; `out=None`: full resolution)."""
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


def as_rgb(pixels: np.ndarray) -> np.ndarray:
  """(H, W, 3): a gray (H, W) image repeated in three channels, an RGB one as it is."""
  return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels


def resample(pixels: np.ndarray, box: Box, out: int, antialias: bool) -> np.ndarray:
  """`box` of `pixels` resized to uint8 RGB (out, out, 3): PIL's antialiased bilinear on the exact box,
  or OpenCV's plain bilinear on the box rounded to whole pixels (at least one). The box is first
  clamped to the image: float rounding puts box edges on the image's edges a hair outside it."""
  h, w = pixels.shape[:2]
  x0, y0 = min(max(box[0], 0), w), min(max(box[1], 0), h)
  box = (x0, y0, min(max(box[2], x0), w), min(max(box[3], y0), h))
  if antialias:
    res = np.asarray(Image.fromarray(pixels).resize((out, out), Image.Resampling.BILINEAR, box=box))
  else:
    x0, y0 = min(round(box[0]), w - 1), min(round(box[1]), h - 1)
    x1, y1 = max(round(box[2]), x0 + 1), max(round(box[3]), y0 + 1)
    res = cv2.resize(pixels[y0:y1, x0:x1], (out, out), interpolation=cv2.INTER_LINEAR)
  return as_rgb(res)


def centre_crop(data, resize: float, size: int, geometry: str = 'exact') -> np.ndarray:
  """uint8 (size, size, 3): the short side resized to `resize`, the centre `size` square (eval), in
  the eval `geometry` (module docstring)."""
  if geometry == 'torchvision':  # as torchvision: full decode, resize the whole image, crop
    pixels, _ = decode(data, lambda w, h: (0, 0, w, h), None)
    h, w = pixels.shape[:2]
    (nw, nh), (left, top) = torchvision_resize_crop(w, h, resize, size)
    if nw * nh > PANORAMA_AREA * resize * resize:  # resample only the crop's box: the same pixels
      box = (left * w / nw, top * h / nh, (left + size) * w / nw, (top + size) * h / nh)  # up to
      return resample(pixels, box, size, antialias=True)  # float rounding (a grey level or two)
    res = np.asarray(Image.fromarray(pixels).resize((nw, nh), Image.Resampling.BILINEAR))
    res = res[top:top + size, left:left + size]
    return as_rgb(res)
  pixels, box = decode(data, lambda w, h: centre_box(w, h, resize, size), size)
  return resample(pixels, box, size, antialias=True)


def short_side_box(w: int, h: int, resize: float, size: int, x: float, y: float) -> Box:
  """The box of a `size` crop at (x, y) of the image rescaled so that its short side is `resize`."""
  s = resize / min(w, h)
  return (x / s, y / s, (x + size) / s, (y + size) / s)


def centre_box(w: int, h: int, resize: float, size: int) -> Box:
  """'exact' eval: the `size` square at the exact centre of the image rescaled to short side `resize`."""
  s = resize / min(w, h)
  return short_side_box(w, h, resize, size, (w * s - size) / 2, (h * s - size) / 2)


def torchvision_resize_crop(w: int, h: int, resize: int, size: int):
  """'torchvision' eval: ((W', H'), (left, top)): torchvision's Resize(resize) output size (short
  side `resize`, long side `int(resize * long / short)`, truncated) and its CenterCrop(size) offsets
  in whole pixels, `round((W' - size) / 2)` and `round((H' - size) / 2)` (Python's round)."""
  new_long = int(resize * max(w, h) / min(w, h))
  nw, nh = (resize, new_long) if w <= h else (new_long, resize)
  return (nw, nh), (round((nw - size) / 2), round((nh - size) / 2))


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


def distorted_bounding_box(w, h, rng, area=(0.05, 1.0), ratio=(0.75, 1.33), min_covered=0.1,
                           attempts=100) -> Box:
  """TF-slim Inception training crop: `tf.image.sample_distorted_bounding_box` with the whole image
  as the object (its CPU kernel's sampling: aspect r uniform in `ratio`, the height uniform in whole
  pixels between those of the smallest and largest `area`, width round(r * height), offsets uniform;
  a crop must cover `min_covered` of the image), else after `attempts` tries the whole image."""
  lo, hi = area[0] * w * h, area[1] * w * h
  for _ in range(attempts):
    r = rng.uniform(*ratio)
    ch, max_h = round(math.sqrt(lo / r)), round(math.sqrt(hi / r))
    if round(max_h * r) > w:  # the tallest crop whose width still fits
      max_h = int((w + 0.5 - 1e-7) / r)
      max_h -= round(max_h * r) > w
    max_h = min(max_h, h)
    ch = min(ch, max_h)
    ch += int(rng.integers(0, max_h - ch, endpoint=True))
    cw = round(ch * r)
    if cw * ch < lo:  # rounding: one pixel taller, or shorter, before giving up this try
      ch += 1
      cw = round(ch * r)
    if cw * ch > hi:
      ch -= 1
      cw = round(ch * r)
    if not (lo <= cw * ch <= hi and 0 < cw <= w and 0 < ch <= h and cw * ch >= min_covered * w * h):
      continue
    y = int(rng.integers(0, h - ch)) if ch < h else 0  # TF: uniform in [0, h - ch)
    x = int(rng.integers(0, w - cw)) if cw < w else 0
    return (x, y, x + cw, y + ch)
  return (0, 0, w, h)


def photometric_distortions(img: np.ndarray, rng) -> np.ndarray:
  """Howard 2013 §2.1 (GoogLeNet §6): contrast, brightness and colour with PIL's ImageEnhance, in a
  random order, each with an enhancement factor uniform in [0.5, 1.5]; uint8 in, uint8 out."""
  order = rng.permutation(3)
  factors = rng.uniform(*PHOTOMETRIC_RANGE, size=3)
  enhancers = (ImageEnhance.Contrast, ImageEnhance.Brightness, ImageEnhance.Color)
  pil = Image.fromarray(img)
  for i in order:
    pil = enhancers[i](pil).enhance(factors[i])
  return np.asarray(pil)


def adjust_brightness(x: np.ndarray, delta: float) -> np.ndarray:
  """tf.image.adjust_brightness of a float image: x + delta."""
  return x + np.float32(delta)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
  """tf.image.adjust_saturation of a float RGB image: in HSV, S -> clip(S * factor, 0, 1), H and V
  kept. With H and V fixed every channel c is linear in S, c = V - (V - c) * S' / S, so this is that
  without the HSV round trip (S = (V - min) / V for V > 0; for V <= 0 TF sets S = 0: all channels V)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]  # (numpy reduces slowly over a last axis of 3)
  v = np.maximum(np.maximum(r, g), b)
  spread = v - np.minimum(np.minimum(r, g), b)
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = np.where(v > 0, np.minimum(np.float32(factor), v / spread), 0)  # S'/S = min(f, 1/S)
  v, ratio = (np.repeat(z[..., None], 3, axis=-1) for z in (v, ratio))
  return (v - (v - x) * ratio).astype(np.float32)


def distort_color_fast(x: np.ndarray, rng) -> np.ndarray:
  """TF-slim `distort_color(fast_mode=True)`, colour ordering 0: random brightness, then random
  saturation, clipped to [0, 1] (x float on the [0, 1] scale)."""
  x = adjust_brightness(x, rng.uniform(-TF_BRIGHTNESS_DELTA, TF_BRIGHTNESS_DELTA))
  x = adjust_saturation(x, rng.uniform(*TF_SATURATION_RANGE))
  return np.clip(x, 0, 1)


def lighting_shift(rng) -> np.ndarray:
  """AlexNet §4.1 PCA colour noise: the RGB shift sum_i p_i alpha_i lambda_i, alpha_i ~ N(0, 0.1),
  added to every pixel (on the [0, 1] scale), redrawn for every image."""
  alpha = rng.normal(0.0, LIGHTING_STD, size=3).astype(np.float32)
  return PCA_EIGVEC @ (alpha * PCA_EIGVAL)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The parts of one train augmentation, applied in this order, each drawing from the image's rng:

  box: `box(w, h, resize, size, rng)`, the crop box in the stored (w, h) image's pixels,
    resampled to (size, size); `resize` is the short side the eval transform rescales to (256 for
    224 crops).
  photometric: `photometric(img, rng)` on the uint8 (size, size, 3) crop, or None.
  (then the horizontal flip, with probability 1/2)
  colour: `colour(x, rng)` on the flipped crop as float32 on the [0, 1] scale, or None.
  lighting: whether AlexNet's PCA lighting noise (`lighting_shift`) is added to every pixel.
  """
  box: Callable[..., Box]
  photometric: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
  colour: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
  lighting: bool = False


def scale_jitter(s_max: float) -> Callable[..., Box]:
  """`scale_jitter_box` as an Augmentation.box: short side S uniform in [resize, s_max * resize]."""
  return lambda w, h, resize, size, rng: scale_jitter_box(w, h, resize, round(s_max * resize), size,
                                                          rng)


def whole_image(rule: Callable[..., Box]) -> Callable[..., Box]:
  """A box rule of the whole image, `rule(w, h, rng)`, as an Augmentation.box (resize and size
  unused)."""
  return lambda w, h, resize, size, rng: rule(w, h, rng)


# The train augmentations by the name `data.augment` gives; adding one is adding a row (and a
# function, for a new part). Sizes scale with the crop: the papers' numbers are those at 224
# (resize 256).
AUGMENTATION_RECIPES: dict[str, Augmentation | None] = {
    # Krizhevsky et al. 2012 §2, §4.1: short side to `resize`, the central resize x resize square, a
    # random `size` crop of it; PCA lighting noise.
    'alexnet': Augmentation(alexnet_box, lighting=True),
    # Simonyan & Zisserman 2015 §3.1: short side S uniform in [resize, 2 resize] ([256, 512]), a
    # random crop of the whole image; PCA lighting noise (§3.1 follows AlexNet's).
    'vgg': Augmentation(scale_jitter(512 / 256), lighting=True),
    # Szegedy et al. 2015 §6: a patch of 8-100 % of the area, aspect 3/4-4/3.
    'inception': Augmentation(whole_image(random_resized_box)),
    # Szegedy et al. 2015 §6: the 'inception' patch, then "the photometric distortions of Andrew
    # Howard" (Howard 2013 §2.1): contrast, brightness and colour (PIL's ImageEnhance, the library
    # Howard names) in a random order, each with an enhancement factor uniform in [0.5, 1.5] (1
    # leaves the image unchanged); then AlexNet's PCA lighting noise, as Howard adds after them.
    'googlenet': Augmentation(whole_image(random_resized_box), photometric=photometric_distortions,
                              lighting=True),
    # TF-slim `inception_preprocessing.preprocess_for_train`, the Inception v3/v4 training input,
    # with its default fast_mode=True: `tf.image.sample_distorted_bounding_box` over the whole image
    # (area [0.05, 1], aspect [0.75, 1.33], min_object_covered 0.1, 100 attempts, else the whole
    # image); then `distort_color` in fast mode: brightness + delta, delta uniform in
    # [-32/255, 32/255], then saturation x factor uniform in [0.5, 1.5] in HSV
    # (tf.image.adjust_brightness / adjust_saturation; fast mode skips hue and contrast), clipped
    # to [0, 1]; then the model's normalisation (TF-slim's own is 2x - 1). The crop is resampled as
    # the other train crops (`antialias`), not with TF's resize_bilinear.
    'inception_tf': Augmentation(whole_image(distorted_bounding_box), colour=distort_color_fast),
    # He et al. 2016 §3.4: as 'vgg' with S in [256, 480]; PCA lighting noise.
    'resnet': Augmentation(scale_jitter(480 / 256), lighting=True),
    'none': None,  # the eval transform
}
AUGMENTATIONS = tuple(AUGMENTATION_RECIPES)


class Transform:
  """Decode, crop, resize, (flip, colour), normalise: the train or eval transform of one recipe.

  `__call__(data, rng)` returns float32 (size, size, 3); `ten_crop(data)` returns (10, size, size, 3):
  the four corners and the centre of the central resize x resize square, then their horizontal
  reflections (AlexNet §4.1 "test time"; for 'torchvision', in TenCrop's order: the five crops of the
  flipped square). `antialias` chooses the train transforms' resampling (see the module docstring);
  eval always resamples with antialiasing, in `eval_geometry` ('torchvision' or 'exact').
  """

  def __init__(self, augment: str | None, size: int, resize: int, mean: Sequence[float],
               std: Sequence[float], antialias: bool = False, eval_geometry: str = 'exact'):
    if augment is not None and augment not in AUGMENTATION_RECIPES:
      raise ValueError(f'unknown augment {augment!r}; choose one of {AUGMENTATIONS}')
    if eval_geometry not in EVAL_GEOMETRIES:
      raise ValueError(f'unknown eval_geometry {eval_geometry!r}; choose one of {EVAL_GEOMETRIES}')
    if resize < size:
      raise ValueError(f'resize {resize} < crop {size}: crop_fraction must be <= 1')
    self.recipe = None if augment is None else AUGMENTATION_RECIPES[augment]
    self.antialias = antialias or self.recipe is None
    self.size, self.resize = size, resize
    self.eval_geometry = eval_geometry
    self.std = np.asarray(std, np.float32)
    # Full-size arrays: numpy is slow at broadcasting over a last axis of 3.
    self.scale = np.tile(np.float32(1 / 255) / self.std, (size, size, 1))
    self.offset = np.tile(-np.asarray(mean, np.float32) / self.std, (size, size, 1))

  def __call__(self, data, rng: np.random.Generator | None = None) -> np.ndarray:
    recipe, size = self.recipe, self.size
    if recipe is None:
      img = centre_crop(data, self.resize, size, self.eval_geometry)
      return np.multiply(img, self.scale, dtype=np.float32) + self.offset
    pixels, box = decode(data, lambda w, h: recipe.box(w, h, self.resize, size, rng), size)
    img = resample(pixels, box, size, self.antialias)
    if recipe.photometric is not None:
      img = recipe.photometric(img, rng)
    if rng.random() < 0.5:
      img = img[:, ::-1]
    x, scale = img, self.scale
    if recipe.colour is not None:
      x = recipe.colour(np.multiply(img, np.float32(1 / 255), dtype=np.float32), rng)
      scale = scale * 255
    offset = self.offset
    if recipe.lighting:
      offset = offset + np.tile(lighting_shift(rng) / self.std, (size, size, 1))
    return np.multiply(x, scale, dtype=np.float32) + offset

  def ten_crop(self, data) -> np.ndarray:
    r, size = self.resize, self.size
    # Normalise the resize x resize square once, then copy the views out of it.
    square = np.multiply(centre_crop(data, r, r, self.eval_geometry), self.scale[:1, :1],
                         dtype=np.float32)
    square += self.offset[:1, :1]
    e = r - size
    centre = round(e / 2) if self.eval_geometry == 'torchvision' else e // 2
    offsets = ((0, 0), (e, 0), (0, e), (e, e), (centre, centre))  # TenCrop's tl, tr, bl, br, centre
    views = np.empty((10, size, size, 3), np.float32)
    for i, (x, y) in enumerate(offsets):
      views[i] = square[y:y + size, x:x + size]
    if self.eval_geometry == 'torchvision':  # TenCrop: the five crops of the flipped square
      flipped = square[:, ::-1]
      for i, (x, y) in enumerate(offsets):
        views[i + 5] = flipped[y:y + size, x:x + size]
    else:  # AlexNet §4.1: the five patches' reflections
      views[5:] = views[:5, :, ::-1]
    return views


def decode_check(fn: Callable, describe: Callable[[], str]):
  """Run `fn()`, turning any decoding failure into a CorruptImageError naming the record."""
  try:
    return fn()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise CorruptImageError(f'cannot decode the image of {describe()}: {type(e).__name__}: {e}') from e
