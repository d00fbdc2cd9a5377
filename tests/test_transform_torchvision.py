"""Eval pixels against torchvision.transforms itself ('torchvision' geometry) and against crops written
here ('exact' geometry, AlexNet §4.1 10-crop): the centre crop and the 10 views, pixel for pixel."""

import io

import numpy as np
import pytest
from PIL import Image

from cnn_jax.data import transforms
from test_transform_sizes import encode, photo_array

T = pytest.importorskip('torchvision.transforms')

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Odd, portrait, landscape, small (below the crop: upscaled), square, and large (where the 'exact'
# geometry decodes JPEGs at a reduced DCT scale).
SIZES = ((500, 375), (500, 374), (375, 500), (257, 300), (333, 500), (551, 413), (130, 98),
         (64, 80), (224, 224), (301, 301), (1200, 901), (999, 1000), (394, 500), (2000, 1333))


def _pixels(out):
  """Our normalised float output back on the uint8 scale, before normalisation."""
  return (out * np.array(STD) + np.array(MEAN)) * 255


def _pil(blob):
  return Image.open(io.BytesIO(blob)).convert('RGB')  # torchvision's ImageFolder loader


def _resize(r):
  return T.Resize(r, interpolation=T.InterpolationMode.BILINEAR, antialias=True)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
@pytest.mark.parametrize('size,resize', [(224, 256), (299, 342)])
def test_torchvision_geometry_centre_crop_is_torchvisions_pixels(fmt, size, resize):
  t = transforms.Transform(None, size, resize, MEAN, STD, eval_geometry='torchvision')
  for w, h in SIZES:
    blob = encode(photo_array(w, h, seed=w + h), fmt)
    expected = np.asarray(T.CenterCrop(size)(_resize(resize)(_pil(blob))), np.float32)
    diff = np.abs(_pixels(t(blob)) - expected)
    assert diff.max() <= 1 + 1e-3, f'{w}x{h}: max |difference| {diff.max():.2f} grey levels'


@pytest.mark.parametrize('w,h', [(500, 375), (375, 500), (257, 300), (130, 98), (1200, 901)])
def test_torchvision_geometry_ten_crop_is_torchvisions_ten_crop(w, h):
  blob = encode(photo_array(w, h, seed=3))
  t = transforms.Transform(None, 224, 256, MEAN, STD, eval_geometry='torchvision')
  views = _pixels(t.ten_crop(blob))
  expected = T.Compose([_resize(256), T.CenterCrop(256), T.TenCrop(224)])(_pil(blob))
  assert len(expected) == 10
  for i, (view, ref) in enumerate(zip(views, expected)):
    diff = np.abs(view - np.asarray(ref, np.float32)).max()
    assert diff <= 1 + 1e-3, f'{w}x{h} view {i}: max |difference| {diff:.2f} grey levels'


@pytest.mark.parametrize('size,resize', [(224, 256), (227, 256), (15, 28)])
def test_exact_geometry_ten_crop_views(size, resize):
  # AlexNet §4.1 "test time": the four corner patches and the centre patch of the resize x resize
  # square at the exact centre of the image rescaled to short side `resize`, and their horizontal
  # reflections. The square is computed here with PIL on the stored pixels (a PNG: no DCT scaling).
  w, h = 500, 375
  img = photo_array(w, h, seed=5)
  s = resize / 375  # the short side is 375
  left = (w * s - resize) / 2 / s  # in stored pixels; vertically the square spans the whole image
  square = np.asarray(Image.fromarray(img).resize((resize, resize), Image.Resampling.BILINEAR,
                                                 box=(left, 0, left + resize / s, h)), np.float32)
  e, c = resize - size, (resize - size) // 2
  patches = [square[y:y + size, x:x + size] for x, y in ((0, 0), (e, 0), (0, e), (e, e), (c, c))]
  expected = patches + [p[:, ::-1] for p in patches]
  t = transforms.Transform(None, size, resize, MEAN, STD, eval_geometry='exact')
  views = _pixels(t.ten_crop(encode(img, 'PNG')))
  np.testing.assert_allclose(views, np.stack(expected), atol=1e-3)


def test_the_two_geometries_differ():
  """They are different protocols: on a detailed photo the sub-pixel centre is not torchvision's."""
  blob = encode(photo_array(500, 375, seed=1))
  exact, tv = (transforms.Transform(None, 224, 256, MEAN, STD, eval_geometry=g)(blob)
               for g in ('exact', 'torchvision'))
  assert np.abs(_pixels(exact) - _pixels(tv)).max() > 2


def test_unknown_eval_geometry_is_explained():
  with pytest.raises(ValueError, match='unknown eval_geometry'):
    transforms.Transform(None, 224, 256, MEAN, STD, eval_geometry='caffe')


@pytest.mark.parametrize('w,h', [(4200, 250), (90, 1500)])
def test_torchvision_geometry_of_panoramas_resamples_the_crop(w, h):
  """Past a 16:1 resized area the whole image is not resized (a 3x2000 image would become 256 x
  170666 px): the crop's box is resampled instead; torchvision's pixels within float rounding."""
  blob = encode(photo_array(w, h, seed=2), 'PNG')
  t = transforms.Transform(None, 224, 256, MEAN, STD, eval_geometry='torchvision')
  expected = np.asarray(T.CenterCrop(224)(_resize(256)(_pil(blob))), np.float32)
  assert np.abs(_pixels(t(blob)) - expected).max() <= 2 + 1e-3
