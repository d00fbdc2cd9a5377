"""The papers' transforms: shapes, dtypes, value ranges, geometry, determinism; decoding messy images."""

import io
import math
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from cnn_jax import data
from cnn_jax.data import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LO = (0 - np.array(MEAN)) / np.array(STD)
HI = (1 - np.array(MEAN)) / np.array(STD)


def _jpeg(w=500, h=375, mode='RGB', fmt='JPEG', seed=0, **kw):
  rng = np.random.default_rng(seed)
  # Smooth random image: upsampled noise, so JPEG and resampling behave as on photos.
  small = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
  img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
  buf = io.BytesIO()
  img.convert(mode).save(buf, fmt, **kw)
  return buf.getvalue()


@pytest.fixture(scope='module')
def photo():
  return _jpeg()


@pytest.mark.parametrize('augment', transforms.AUGMENTATIONS)
@pytest.mark.parametrize('size', [224, 227])
def test_train_transform_shapes_ranges_determinism(photo, augment, size):
  t = transforms.Transform(augment, size, 256, MEAN, STD)
  out = [t(photo, np.random.default_rng(s)) for s in (0, 0, 1)]
  assert out[0].shape == (size, size, 3) and out[0].dtype == np.float32
  np.testing.assert_array_equal(out[0], out[1])  # same seed, same crop/flip/lighting
  if augment != 'none':
    assert not np.array_equal(out[0], out[2])
  # PCA lighting shifts by at most a few sigma of 0.1 * 0.2175 * 0.58 ~ 0.013 per channel.
  margin = 0.1 / np.array(STD) if augment in ('alexnet', 'vgg', 'resnet', 'googlenet') else 1e-5
  assert (out[0] >= LO - margin).all() and (out[0] <= HI + margin).all()


def test_eval_value_exact_on_constant_image():
  x = np.full((375, 500, 3), (10, 128, 250), np.uint8)
  out = transforms.Transform(None, 224, 256, MEAN, STD)(x)
  np.testing.assert_allclose(out, np.broadcast_to((np.array([10, 128, 250]) / 255 - MEAN) / STD,
                                                  out.shape), atol=1e-5)


def test_exact_eval_box_is_the_sub_pixel_centre():
  # 'exact' geometry, by hand: 500x375, short side 375 -> 256 (x 256/375), so 500 -> 341.33. The 224
  # square centred there spans x 58.67..282.67, y 16..240 of the rescaled image; x 375/256 in the
  # stored image: 85.9375..414.0625, 23.4375..351.5625. (torchvision's whole-pixel geometry is
  # compared with torchvision itself in test_transform_torchvision.py.)
  box = transforms.centre_box(500, 375, 256, 224)
  np.testing.assert_allclose(box, (85.9375, 23.4375, 414.0625, 351.5625))


def test_alexnet_crops_lie_in_the_central_square():
  rng = np.random.default_rng(0)
  s = 256 / 375
  for _ in range(200):
    l, t, r, b = transforms.alexnet_box(500, 375, 256, 224, rng)
    assert math.isclose((r - l) * s, 224) and math.isclose((b - t) * s, 224)
    assert (500 * s - 256) / 2 - 1e-6 <= l * s and r * s <= (500 * s + 256) / 2 + 1e-6
    assert 0 <= t * s and b * s <= 256 + 1e-6


@pytest.mark.parametrize('lo,hi', [(256, 512), (256, 480)])  # VGG, ResNet scale jittering
def test_scale_jitter_short_side_range(lo, hi):
  rng = np.random.default_rng(0)
  scales = []
  for _ in range(3000):
    l, t, r, b = transforms.scale_jitter_box(500, 375, lo, hi, 224, rng)
    scale = 224 / (r - l)  # the resize factor; the short side is 375 * scale
    scales.append(375 * scale)
    assert l >= 0 and t >= 0 and r <= 500 + 1e-6 and b <= 375 + 1e-6
  scales = np.round(scales)
  assert scales.min() == lo and scales.max() == hi  # the whole range, inclusive, is drawn


def test_random_resized_crop_area_and_aspect():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(1000):
    l, t, r, b = transforms.random_resized_box(500, 375, rng)
    assert 0 <= l < r <= 500 and 0 <= t < b <= 375
    areas.append((r - l) * (b - t) / (500 * 375))
    ratios.append((r - l) / (b - t))
  assert 0.075 < min(areas) < 0.1 and max(areas) <= 1  # 8-100 % of the area (rounded sides)
  assert 0.74 < min(ratios) and max(ratios) < 1.35


# ImageNet's RGB PCA on the [0, 1] scale as facebook/fb.resnet.torch datasets/imagenet.lua publishes
# it (`pca.eigval`, `pca.eigvec`; AlexNet §4.1 does not print its own), written out here.
FB_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
FB_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                      [-0.5808, -0.0045, -0.8140],
                      [-0.5836, -0.6948, 0.4203]])


def test_lighting_adds_the_pca_shift():
  """AlexNet §4.1: add sum_i p_i alpha_i lambda_i, alpha_i ~ N(0, 0.1), to every pixel."""
  shift = transforms.lighting_shift(np.random.default_rng(5))
  alpha = np.random.default_rng(5).normal(0, 0.1, 3)
  want = sum(FB_EIGVEC[:, i] * alpha[i] * FB_EIGVAL[i] for i in range(3))
  np.testing.assert_allclose(shift, want, rtol=1e-5, atol=1e-7)
  # On a flat image the alexnet transform moves each channel by exactly that shift.
  x = np.full((300, 400, 3), 100, np.uint8)
  t = transforms.Transform('alexnet', 224, 256, MEAN, STD)
  plain = transforms.Transform(None, 224, 256, MEAN, STD)(x)
  rng = np.random.default_rng(7)
  out = t(x, rng)
  rng = np.random.default_rng(7)  # replay the draws: crop offsets, flip, then alpha
  rng.integers(0, 32, endpoint=True, size=2), rng.random()
  np.testing.assert_allclose(out - plain, np.broadcast_to(
      transforms.lighting_shift(rng) / np.array(STD), out.shape), atol=1e-5)


def test_ten_crop(photo):
  t = transforms.Transform(None, 224, 256, MEAN, STD)
  v = t.ten_crop(photo)
  assert v.shape == (10, 224, 224, 3) and v.dtype == np.float32
  np.testing.assert_array_equal(v[5:], v[:5, :, ::-1])  # the last five are the flips
  assert len({x.tobytes() for x in v}) == 10
  # The centre view is the eval crop (up to resampling in one step instead of two).
  assert np.abs(v[4] - t(photo)).mean() < 0.05


def test_draft_decoding_close_to_full_decode():
  big = _jpeg(2000, 1500)
  t = transforms.Transform(None, 224, 256, MEAN, STD)
  img = Image.open(io.BytesIO(big))
  img.load()  # decoded fully: no draft possible any more
  # The exact centre box by hand: x 256/1500 makes 2000x1500 341.33x256; the 224 square at
  # x 58.67..282.67, y 16..240 is x 343.75..1656.25, y 93.75..1406.25 of the stored image.
  full = np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR,
                               box=(343.75, 93.75, 1656.25, 1406.25)))
  fast = t(big)
  assert np.abs((fast * np.array(STD) + MEAN) * 255 - full).mean() < 2  # gray levels


@pytest.mark.parametrize('kw', [{}, {'subsampling': 0}, {'subsampling': 1}, {'progressive': True},
                                {'mode': 'L'}], ids=['420', '444', '422', 'progressive', 'gray'])
@pytest.mark.parametrize('k', [1, 2, 4])
def test_jpeg_decodes_to_the_pixels_pil_decodes(kw, k):
  blob = _jpeg(**kw)
  pixels, box = transforms.decode(blob, lambda w, h: (0, 0, w, h), 375 // k)  # >= 375/k px: 1/k
  img = Image.open(io.BytesIO(blob))
  img.draft('RGB', (500 // k, 375 // k))
  np.testing.assert_array_equal(pixels, np.asarray(img.convert('RGB')))  # simplejpeg == PIL
  np.testing.assert_allclose(box, (0, 0, 500 / k, 375 / k))


def test_jpeg_rejected_by_strict_libjpeg_turbo_falls_back_to_pil():
  blob = _jpeg(64, 48)
  odd = blob[:-2] + b'\x00\x00\x00' + blob[-2:]  # "extraneous bytes before marker 0xd9": a warning
  pixels, _ = transforms.decode(odd, lambda w, h: (0, 0, w, h), 48)
  np.testing.assert_array_equal(pixels, np.asarray(Image.open(io.BytesIO(blob))))


@pytest.mark.parametrize('antialias', [True, False])
def test_train_resampling_is_the_chosen_filter_on_the_drawn_box(photo, antialias):
  t = transforms.Transform('inception', 224, 256, MEAN, STD, antialias=antialias)
  out = t(photo, np.random.default_rng(3))
  rng = np.random.default_rng(3)  # replay the draws: the box, then the flip
  box = transforms.random_resized_box(500, 375, rng)
  full = np.asarray(Image.open(io.BytesIO(photo)))
  if antialias:  # PIL's antialiased bilinear on the exact box
    expected = np.asarray(Image.fromarray(full).resize((224, 224), Image.Resampling.BILINEAR, box=box))
  else:  # OpenCV's plain bilinear on the box in whole pixels
    l, t_, r, b = (round(v) for v in box)
    expected = cv2.resize(full[t_:b, l:r], (224, 224), interpolation=cv2.INTER_LINEAR)
  if rng.random() < 0.5:
    expected = expected[:, ::-1]
  np.testing.assert_allclose((out * STD + MEAN) * 255, expected, atol=1e-3)


def test_fast_and_antialiased_train_resampling_agree_on_a_smooth_image(photo):
  fast, exact = (transforms.Transform('alexnet', 224, 256, MEAN, STD, antialias=a) for a in (False, True))
  for seed in range(4):
    diff = fast(photo, np.random.default_rng(seed)) - exact(photo, np.random.default_rng(seed))
    assert np.abs(diff * STD * 255).mean() < 3  # gray levels: the same crop, another filter


@pytest.mark.parametrize('kind', ['L', 'CMYK', 'png', 'palette', 'RGBA'])
def test_messy_images_decode_to_rgb(kind):
  if kind in ('L', 'CMYK'):
    blob = _jpeg(mode=kind)
  else:
    mode = {'png': 'RGB', 'palette': 'P', 'RGBA': 'RGBA'}[kind]
    blob = _jpeg(mode=mode, fmt='PNG')  # PNG data, as ImageNet's one PNG inside a .JPEG
  ref = transforms.Transform(None, 224, 256, MEAN, STD)(_jpeg(fmt='PNG'))
  out = transforms.Transform(None, 224, 256, MEAN, STD)(blob)
  assert out.shape == (224, 224, 3)
  if kind == 'L':
    np.testing.assert_allclose(out[..., 0] * STD[0] + MEAN[0], out[..., 1] * STD[1] + MEAN[1],
                               atol=1e-5)
  else:  # colours survive (CMYK JPEG loses a little to its own conversion)
    assert np.abs(out - ref).mean() < (0.5 if kind in ('CMYK', 'palette') else 0.1)


def test_unknown_augment_and_bad_crop_fraction_are_explained():
  with pytest.raises(ValueError, match='unknown augment'):
    transforms.Transform('cutmix', 224, 256, MEAN, STD)
  c = data.default_data_config()
  c.crop_fraction = 1.5
  with pytest.raises(ValueError, match='crop_fraction'):
    data.make_loader(c, 'test', train=False, global_batch_size=4, seed=0, image_size=8,
                     process_index=0, process_count=1)


def test_a_new_augmentation_is_one_row(photo, monkeypatch):
  """A row whose box is the 'exact' eval box and that adds nothing else gives the eval transform's
  pixels, mirrored when the rng's first draw (the flip) is below 1/2."""
  def centre(w, h, resize, size, rng):
    return transforms.centre_box(w, h, resize, size)
  monkeypatch.setitem(transforms.AUGMENTATION_RECIPES, 'centre', transforms.Augmentation(centre))
  expected = transforms.Transform(None, 224, 256, MEAN, STD)(photo)
  t = transforms.Transform('centre', 224, 256, MEAN, STD, antialias=True)
  flips = [np.random.default_rng(seed).random() < 0.5 for seed in range(4)]
  assert any(flips) and not all(flips)
  for seed, flip in enumerate(flips):
    out = t(photo, np.random.default_rng(seed))
    np.testing.assert_array_equal(out, expected[:, ::-1] if flip else expected)


def _write_folder(root, corrupt):
  for split in ('train', 'val'):
    for k, cls in enumerate(('cat', 'dog')):
      d = root / split / cls
      d.mkdir(parents=True)
      for i in range(3):
        (d / f'{i}.jpg').write_bytes(_jpeg(64, 48, seed=10 * k + i))
  (root / 'train' / 'dog' / '9_bad.jpg').write_bytes(corrupt)
  (root / 'val' / 'dog' / '9_bad.jpg').write_bytes(corrupt)


@pytest.mark.parametrize('corrupt', [b'not an image', _jpeg(64, 48)[:300]],
                         ids=['garbage', 'truncated'])
def test_corrupt_image_named_or_skipped(tmp_path, caplog, corrupt):
  _write_folder(tmp_path, corrupt)
  c = data.default_data_config()
  c.name, c.data_dir, c.eval_split, c.augment = 'folder', str(tmp_path), 'val', 'inception'
  assert data.num_examples(c, 'train') == 7 and data.num_classes(c) == 2
  kw = dict(seed=0, image_size=16, process_index=0, process_count=1)
  with pytest.raises(transforms.CorruptImageError, match=r'image file .*dog/9_bad\.jpg'):
    list(data.make_loader(c, 'val', train=False, global_batch_size=7, **kw))
  c.skip_corrupt = True
  (b,) = list(data.make_loader(c, 'val', train=False, global_batch_size=7, **kw))
  assert b['mask'].sum() == 6 and not b['mask'][-1]  # the corrupt one is masked out, not a pad row
  assert re.search(r'skipped \d+ corrupt image.*9_bad\.jpg', caplog.text)
  it = data.make_loader(c, 'train', train=True, global_batch_size=6, seed=0, image_size=16,
                        process_index=0, process_count=1)
  for _ in range(4):  # the bad image, 1 in 7, is replaced by a good one: batches stay full
    b = next(it)
    assert b['image'].shape == (6, 16, 16, 3) and b['mask'].all()


def test_fashion_mnist_sizes():
  import os
  from cnn_jax.data import sources
  if not os.path.isdir(sources.FASHION_MNIST_DIR):
    pytest.skip('Fashion-MNIST absent: apt-get install dataset-fashion-mnist')
  c = data.default_data_config()
  c.name = 'fashion_mnist'
  assert data.num_examples(c, 'train') == 60000 and data.num_examples(c, 'test') == 10000
  assert data.num_classes(c) == 10
  src = sources.fashion_mnist('test')
  assert src.images.shape == (10000, 28, 28, 1) and np.bincount(src.labels).tolist() == [1000] * 10
  (b,) = [next(data.make_loader(c, 'test', train=False, global_batch_size=5, seed=0, image_size=32,
                                model_name='alexnet', process_index=0, process_count=1))]
  assert b['image'].shape == (5, 32, 32, 3) and b['label'].tolist() == src.labels[:5].tolist()


def test_16_bit_png_keeps_its_high_byte():
  # A 16-bit gradient holding every value 0..65535 once: v = 256 y + x on a 256x256 image, whose
  # 8-bit value is v >> 8 = y (the high byte; PIL reads 16-bit colour PNGs so). Before, PIL's
  # convert('RGB') clipped v to 255: an almost white image.
  v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
  expected = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1)
  ok, gray16 = cv2.imencode('.png', v)
  rgb = np.stack([v, 65535 - v, v // 2], axis=-1)  # 16-bit colour, also v >> 8 per channel
  ok2, rgb16 = cv2.imencode('.png', rgb[..., ::-1])  # OpenCV writes BGR
  assert ok and ok2
  pixels, _ = transforms.decode(gray16.tobytes(), lambda w, h: (0, 0, w, h), None)
  np.testing.assert_array_equal(pixels, expected)
  pixels, _ = transforms.decode(rgb16.tobytes(), lambda w, h: (0, 0, w, h), None)
  np.testing.assert_array_equal(pixels, (rgb >> 8).astype(np.uint8))
  out = transforms.Transform(None, 224, 256, MEAN, STD)(gray16.tobytes())
  assert abs((out[..., 0] * STD[0] + MEAN[0]).mean() - 0.5) < 0.01  # mid-grey on average, not white


class _Draws:
  """A stand-in for np.random.Generator that returns chosen values and records the ranges asked."""

  def __init__(self, permutation=None, uniform=()):
    self.order, self.values, self.asked = permutation, list(uniform), []

  def permutation(self, n):
    assert n == 3
    return np.array(self.order)

  def uniform(self, lo, hi, size=None):
    self.asked.append((lo, hi, size))
    return np.array(self.values.pop(0)) if size else self.values.pop(0)


def _blend(degenerate, img, f):
  """PIL's Image.blend(degenerate, img, f): degenerate + f (img - degenerate), truncated to uint8."""
  return np.clip(np.trunc(degenerate + np.float32(f) * (img - degenerate)), 0, 255)


def test_howard_photometric_distortions_by_hand():
  # Howard 2013 §2.1: contrast, brightness and colour, in a random order, each factor in [0.5, 1.5];
  # PIL's ImageEnhance blends the image with a degenerate one: Contrast with the grey of its mean
  # luma (ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B), Brightness with black, Color with its luma.
  img = np.array([[[200, 100, 50], [10, 20, 30]], [[255, 255, 255], [90, 180, 40]]], np.uint8)
  draws = _Draws(permutation=[1, 2, 0], uniform=[[1.4, 0.6, 1.3]])  # contrast, brightness, colour
  out = transforms.photometric_distortions(img, draws)
  assert draws.asked == [(0.5, 1.5, 3)]
  x = img.astype(np.float32)
  x = _blend(0, x, 0.6)  # brightness first (order [1, 2, 0])
  luma = np.round(x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
  x = _blend(luma, x, 1.3)  # then colour
  mean = int(np.round(x @ np.array([0.299, 0.587, 0.114], np.float32)).mean() + 0.5)
  x = _blend(mean, x, 1.4)  # then contrast
  assert out.dtype == np.uint8
  np.testing.assert_allclose(out, x, atol=1)


def test_tf_saturation_and_brightness_by_hand():
  # HSV by hand: (0.8, 0.4, 0.2) has V = 0.8, S = (0.8 - 0.2) / 0.8 = 0.75, H = 60 * (0.4 - 0.2) /
  # 0.6 = 20 deg. S x 0.5 = 0.375: C = V S = 0.3, m = V - C = 0.5, X = C (1 - |H/60 mod 2 - 1|)
  # = 0.1, so RGB = (C + m, X + m, m) = (0.8, 0.6, 0.5). S x 2 = 1.5, clipped to 1: C = 0.8, m = 0,
  # X = 0.8 / 3: (0.8, 0.2667, 0). Grey and black have S = 0 and stay.
  x = np.array([[[0.8, 0.4, 0.2], [0.5, 0.5, 0.5], [0, 0, 0]]], np.float32)
  np.testing.assert_allclose(transforms.adjust_saturation(x, 0.5)[0, 0], (0.8, 0.6, 0.5), atol=1e-6)
  np.testing.assert_allclose(transforms.adjust_saturation(x, 2.0)[0, 0], (0.8, 0.8 / 3, 0), atol=1e-6)
  np.testing.assert_allclose(transforms.adjust_saturation(x, 1.5)[0, 1:], x[0, 1:])
  np.testing.assert_allclose(transforms.adjust_brightness(x, 0.1), x + np.float32(0.1))
  # distort_color(fast_mode=True), ordering 0: brightness (delta in [-32/255, 32/255]), then
  # saturation ([0.5, 1.5]), then clip to [0, 1]. (0.8, 0.4, 0.2) + 0.1 = (0.9, 0.5, 0.3): S = 2/3
  # -> 1/3 halves V - c: (0.9, 0.7, 0.6). (0.95, 0.5, 0.5) + 0.1 -> (1.05, 0.825, 0.825) -> clip.
  draws = _Draws(uniform=[0.1, 0.5])
  y = np.array([[[0.8, 0.4, 0.2], [0.95, 0.5, 0.5]]], np.float32)
  out = transforms.distort_color_fast(y, draws)
  assert draws.asked == [(-32 / 255, 32 / 255, None), (0.5, 1.5, None)]
  np.testing.assert_allclose(out[0], [(0.9, 0.7, 0.6), (1.0, 0.825, 0.825)], atol=1e-6)


@pytest.mark.parametrize('augment', ['googlenet', 'inception_tf'])
def test_colour_augmentations_on_a_grey_image(augment):
  # On a uniform grey image contrast, colour and saturation change nothing (S = 0, the mean is the
  # image): 'googlenet' leaves floor(100 x brightness factor) plus the PCA lighting shift (Howard
  # §2.1: lighting after the manipulations), 'inception_tf' leaves 100/255 + delta, clipped.
  x = np.full((300, 400, 3), 100, np.uint8)
  out = transforms.Transform(augment, 224, 256, MEAN, STD)(x, np.random.default_rng(4))
  rng = np.random.default_rng(4)  # replay the draws: the box, ...
  if augment == 'googlenet':
    transforms.random_resized_box(400, 300, rng)
    rng.permutation(3)
    brightness = rng.uniform(0.5, 1.5, size=3)[1]  # ... the order and factors, flip, alpha
    rng.random()
    alpha = rng.normal(0, 0.1, 3)
    shift = FB_EIGVEC @ (alpha * FB_EIGVAL)
    expected = np.floor(100 * brightness) / 255 + shift
  else:
    transforms.distorted_bounding_box(400, 300, rng)
    rng.random()
    expected = np.clip(100 / 255 + rng.uniform(-32 / 255, 32 / 255), 0, 1) * np.ones(3)
  np.testing.assert_allclose(out * STD + MEAN, np.broadcast_to(expected, out.shape), atol=1e-5)


_TF_SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
tf.random.set_seed(0)
x = np.load(sys.argv[1])
out = {}
for i, (delta, factor) in enumerate([(-32 / 255, 0.5), (0.1, 1.37), (0.0, 1.5), (0.12, 0.81)]):
  b = tf.image.adjust_brightness(x, delta)
  out[f'brightness{i}'] = b.numpy()
  out[f'saturation{i}'] = tf.image.adjust_saturation(b, factor).numpy()
whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
for h, w in [(375, 500), (40, 1000), (3, 5)]:
  boxes = []
  for _ in range(1500):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        [h, w, 3], whole, min_object_covered=0.1, aspect_ratio_range=(0.75, 1.33),
        area_range=(0.05, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    boxes.append([begin[1], begin[0], begin[1] + size[1], begin[0] + size[0]])
  out[f'boxes{w}x{h}'] = np.array(boxes)
np.savez(sys.argv[2], **out)
'''


@pytest.fixture(scope='module')
def tf_reference(tmp_path_factory):
  """TensorFlow's own outputs, computed in a subprocess (TF and torch in one process crash)."""
  import importlib.util
  import os
  import subprocess
  import sys
  if importlib.util.find_spec('tensorflow') is None:
    pytest.skip('tensorflow is not installed')
  d = tmp_path_factory.mktemp('tf')
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (16, 16, 3)).astype(np.float32)
  x[0, :4] = [(0.5, 0.5, 0.5), (0, 0, 0), (1, 1, 1), (1, 0, 0)]  # grey, black, white, pure red
  np.save(d / 'x.npy', x)
  env = dict(os.environ, CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='3')
  subprocess.run([sys.executable, '-c', _TF_SCRIPT, str(d / 'x.npy'), str(d / 'tf.npz')],
                 check=True, timeout=600, env=env, capture_output=True)
  return x, dict(np.load(d / 'tf.npz'))


def test_colour_ops_match_tensorflow(tf_reference):
  x, ref = tf_reference
  for i, (delta, factor) in enumerate([(-32 / 255, 0.5), (0.1, 1.37), (0.0, 1.5), (0.12, 0.81)]):
    b = transforms.adjust_brightness(x, delta)  # values outside [0, 1] too, as in distort_color
    np.testing.assert_allclose(b, ref[f'brightness{i}'], atol=1e-6)
    np.testing.assert_allclose(transforms.adjust_saturation(b, factor), ref[f'saturation{i}'],
                               atol=1e-5)


@pytest.mark.parametrize('w,h', [(500, 375), (1000, 40), (5, 3)])
def test_distorted_bounding_box_matches_tensorflows_distribution(tf_reference, w, h):
  """Same distribution as tf.image.sample_distorted_bounding_box (TF-slim's arguments): the share
  of whole-image fallbacks, the area and aspect-ratio quantiles, the position of the centre."""
  def stats(boxes):
    b = np.asarray(boxes, np.float64)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    whole = np.mean((bw == w) & (bh == h))
    area, aspect = bw * bh / (w * h), bw / bh
    return np.concatenate([[whole], np.quantile(area, [0.1, 0.5, 0.9]),
                           np.quantile(aspect, [0.1, 0.5, 0.9]),
                           [((b[:, 0] + b[:, 2]) / 2 / w).mean(), ((b[:, 1] + b[:, 3]) / 2 / h).mean()]])
  rng = np.random.default_rng(0)
  ours = stats([transforms.distorted_bounding_box(w, h, rng) for _ in range(3000)])
  theirs = stats(tf_reference[1][f'boxes{w}x{h}'])
  # 1500 TF draws: sampling error of a share or quantile of ~0.015; aspect ratios ~1 wide.
  np.testing.assert_allclose(ours, theirs, atol=0.05)
  for box in (transforms.distorted_bounding_box(w, h, rng) for _ in range(200)):
    l, t, r, b = box
    assert 0 <= l < r <= w and 0 <= t < b <= h and (r - l) * (b - t) >= 0.1 * w * h
