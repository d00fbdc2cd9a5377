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
  margin = 0.1 / np.array(STD) if augment in ('alexnet', 'vgg', 'resnet') else 1e-5
  assert (out[0] >= LO - margin).all() and (out[0] <= HI + margin).all()


def test_eval_value_exact_on_constant_image():
  x = np.full((375, 500, 3), (10, 128, 250), np.uint8)
  out = transforms.Transform(None, 224, 256, MEAN, STD)(x)
  np.testing.assert_allclose(out, np.broadcast_to((np.array([10, 128, 250]) / 255 - MEAN) / STD,
                                                  out.shape), atol=1e-5)


def test_eval_centre_box_is_torchvision_resize_centre_crop():
  # 500x375, short side 375 -> 256 (scale 256/375); the 224 crop is centred in the 341.3x256 image.
  s = 256 / 375
  box = transforms.centre_box(500, 375, 256, 224)
  np.testing.assert_allclose(box, ((500 * s - 224) / 2 / s, 16 / s, (500 * s + 224) / 2 / s, 240 / s))


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


def test_lighting_adds_the_pca_shift():
  shift = transforms.lighting_shift(np.random.default_rng(5))
  alpha = np.random.default_rng(5).normal(0, 0.1, 3).astype(np.float32)
  np.testing.assert_allclose(shift, transforms.PCA_EIGVEC @ (alpha * transforms.PCA_EIGVAL))
  # The eigenvectors are orthonormal (columns), as a PCA's are.
  np.testing.assert_allclose(transforms.PCA_EIGVEC.T @ transforms.PCA_EIGVEC, np.eye(3), atol=2e-3)
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
  full = np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR,
                               box=transforms.centre_box(2000, 1500, 256, 224)))
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
