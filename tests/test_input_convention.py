"""Each model is fed the input scale its recipe was designed for (registry `input_convention`).

Krizhevsky et al. 2012 §2: "We did not pre-process the images in any other way, except for
subtracting the mean activity over the training set from each pixel. So we trained our network on
the (centered) raw RGB values of the pixels." The N(0, 0.01) init with biases 1 in conv2, conv4,
conv5, fc6, fc7 (§5) and the LRN constants k=2, n=5, alpha=1e-4, beta=0.75 (§3.3) assume that 0-255
scale. Fed torchvision's normalised input (~58x smaller), LRN divides by a constant 2^0.75 and the
bias-1 layers barely see the image: the tests marked "old" below fail on a registry that gave
alexnet2012 torchvision's mean/std.
"""

import numpy as np
import pytest
from flax import nnx
from sklearn.datasets import load_sample_image  # real photos shipped with scikit-learn

from cnn_jax import data, models
from cnn_jax.data import config as data_config_lib
from cnn_jax.data import transforms
from cnn_jax.models import layers, registry
from cnn_jax.tools import tour

# torchvision's ImageNet normalisation (transforms._presets.ImageClassification defaults).
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MEAN_PIXEL = np.array([123.675, 116.28, 103.53])  # 255 * TV_MEAN, by hand
RAW_STD = (1 / 255,) * 3  # (x / 255 - m) / (1 / 255) = x - 255 m: 0-255, no std division
EXPECTED_MEAN_STD = {
    'torchvision': (TV_MEAN, TV_STD),
    # imagenet-multiGPU.torch donkey.lua normalises the [0, 1] image by the per-channel mean and
    # std it estimates on 10,000 training images; fb.resnet.torch published that estimate as these.
    'torch7_meanstd': (TV_MEAN, TV_STD),
    'raw_centred': (TV_MEAN, RAW_STD),
    'tf_inception': ((0.5,) * 3, (0.5,) * 3),  # TF-slim inception_preprocessing: [-1, 1]
}
TORCHVISION = ['alexnet', 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19',
               'vgg19_bn', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
               'googlenet', 'inception_v3', 'squeezenet1_0', 'squeezenet1_1', 'mobilenet_v2',
               'densenet121']
EXPECTED_CONVENTION = {
    **{name: 'torchvision' for name in TORCHVISION},
    'alexnet2012': 'raw_centred',  # Krizhevsky et al. 2012 §2
    'nin': 'raw_centred',          # the Caffe nin_imagenet train_val.prototxt: mean_file, 0-255
    'resnet50_v1': 'raw_centred',  # He et al. 2016 §3.4 "per-pixel mean subtracted"; Caffe release
    'bn_alexnet': 'torch7_meanstd',  # soumith/imagenet-multiGPU.torch alexnetowtbn
    'bn_nin': 'torch7_meanstd',      # soumith/imagenet-multiGPU.torch ninbn
    'enet': 'torch7_meanstd',        # e-lab/imagenet-multiGPU.torch (opts.lua: -normalize true)
    'enet_v2': 'torch7_meanstd',
    'inception_v4': 'tf_inception',  # TF-slim inception_preprocessing
    'googlenet_paper': 'tf_inception',  # the paper states none; Google's Inception preprocessing
}
LRN_FLOOR = 2 ** 0.75  # the divisor (k + alpha * 0) ** beta with k = 2, beta = 0.75 (§3.3)


def test_every_model_has_its_convention_and_geometry():
  assert set(models.list_models(include_tiny=False)) == set(EXPECTED_CONVENTION)
  for name, convention in EXPECTED_CONVENTION.items():
    info = models.get_info(name)
    assert info.input_convention == convention, name
    mean, std = EXPECTED_MEAN_STD[convention]
    np.testing.assert_allclose(info.mean, mean, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(info.std, std, rtol=1e-12, err_msg=name)
    # torchvision-derived models are evaluated on torchvision's eval pixels, the others exactly.
    assert info.eval_geometry == ('torchvision' if name in TORCHVISION else 'exact'), name


def test_torchvision_models_use_torchvision_weights_normalisation():
  torchvision = pytest.importorskip('torchvision')
  for name in TORCHVISION:
    preset = torchvision.models.get_model_weights(name).IMAGENET1K_V1.transforms()
    np.testing.assert_allclose(models.get_info(name).mean, preset.mean, err_msg=name)
    np.testing.assert_allclose(models.get_info(name).std, preset.std, err_msg=name)


def test_unknown_convention_is_refused():
  with pytest.raises(ValueError, match='unknown input_convention .*raw_centred'):
    registry.ModelInfo(name='x', constructor=None, kwargs={}, family='x', paper='x', params=None,
                       input_convention='caffe', eval_geometry='exact')


def test_data_config_mean_std_override_the_registry():
  config = data_config_lib.default_data_config()
  assert data.model_preprocessing(config, 'alexnet2012')[:2] == (TV_MEAN, RAW_STD)
  assert data.model_preprocessing(config, None)[:2] == (TV_MEAN, TV_STD)
  config.mean, config.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  assert data.model_preprocessing(config, 'alexnet2012')[:2] == ((0.5,) * 3, (0.25,) * 3)


def _transform(mean, std):
  return transforms.Transform(None, 227, 256, mean, std)  # the loader's eval transform


def test_alexnet2012_sees_centred_raw_pixels():  # fails on the old registry
  info = models.get_info('alexnet2012')
  raw = _transform(info.mean, info.std)
  # Flat images: 255 - 255 * mean and 0 - 255 * mean, by hand.
  np.testing.assert_allclose(raw(np.full((300, 400, 3), 255, np.uint8))[100, 100],
                             [131.325, 138.72, 151.47], atol=1e-3)
  np.testing.assert_allclose(raw(np.zeros((300, 400, 3), np.uint8))[0, 0],
                             [-123.675, -116.28, -103.53], atol=1e-3)
  photo = load_sample_image('china.jpg')
  x = raw(photo)
  pixels = x + MEAN_PIXEL  # the resampled uint8 photo
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
  assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
  assert x.min() < -100 and x.max() > 120  # this photo spans the 0-255 range
  # The same pixels through torchvision's normalisation: (x / 255 - mean) / std.
  normalised = _transform(TV_MEAN, TV_STD)(photo)
  np.testing.assert_allclose(normalised * 255 * np.array(TV_STD) + MEAN_PIXEL, pixels, atol=1e-3)


def lrn_divisor(a, groups=2, k=2.0, n=5, alpha=1e-4, beta=0.75):
  """Krizhevsky et al. 2012 §3.3, written out: b_i = a_i / (k + alpha * sum_j a_j^2) ** beta, j
  from max(0, i - n/2) to min(N - 1, i + n/2) over the N maps of each GPU (tower)."""
  *lead, c = a.shape
  maps = c // groups
  g = a.astype(np.float64).reshape(*lead, groups, maps)
  sums = np.empty_like(g)
  for i in range(maps):
    sums[..., i] = np.square(g[..., max(0, i - n // 2):min(maps - 1, i + n // 2) + 1]).sum(-1)
  return ((k + alpha * sums) ** beta).reshape(a.shape)


@pytest.fixture(scope='module')
def activations():
  """alexnet2012 at initialisation (seed 0) on two photos, fed with the registry's convention
  ('registered') and with torchvision's ('torchvision'): conv1 after ReLU, after LRN, the input
  and output of conv2 (before its ReLU) and fc6 before its ReLU. fc6/fc7 are 256 wide instead of
  4096 (fc6 keeps its 9216 inputs, so each unit is distributed as in the full network)."""
  model = nnx.jit(lambda: models.create('alexnet2012', 10, seed=0, fc_features=256))()  # 2x faster
  photos = [load_sample_image('china.jpg'), load_sample_image('flower.jpg')]
  info = models.get_info('alexnet2012')
  out = {}
  for key, (mean, std) in {'registered': (info.mean, info.std),
                           'torchvision': (TV_MEAN, TV_STD)}.items():
    x = np.stack([_transform(mean, std)(p) for p in photos])
    a1 = nnx.relu(model.conv1(x))
    n1 = layers.local_response_norm(a1, groups=2)
    p1 = layers.max_pool(n1, 3, 2)
    z2 = model.conv2(p1)
    features = np.asarray(model.features(x)).transpose(0, 3, 1, 2).reshape(2, -1)
    out[key] = {name: np.asarray(v, np.float64) for name, v in
                dict(a1=a1, n1=n1, p1=p1, z2=z2, z6=model.fc6(features)).items()}
  return out


def test_lrn_divides_by_what_the_paper_says(activations):
  for acts in activations.values():
    a1, n1 = acts['a1'], acts['n1']
    live = a1 > 1e-3  # where a / b measures the divisor
    np.testing.assert_allclose((a1 / np.where(live, n1, 1))[live], lrn_divisor(a1)[live], rtol=1e-5)


def test_lrn_divisor_varies_at_the_raw_scale(activations):  # fails on the old registry
  # By hand: conv1 sums 363 inputs with N(0, 0.01) weights, so on a patch of rms r (0-255 units)
  # its output has std 0.01 * sqrt(363) * r = 0.19 r; five ReLU'd neighbours give
  # sum a^2 ~ 2.5 (0.19 r)^2. Raw scale, high-contrast patches (r ~ 100-150): alpha * sum ~ 0.1-0.2
  # on average, several times that in the tails, so the divisor (2 + alpha * sum)^0.75 rises 20 %
  # or more above 2^0.75 somewhere.
  raw = lrn_divisor(activations['registered']['a1']) / LRN_FLOOR
  assert raw.max() > 1.2
  assert (raw > 1.05).mean() > 0.01  # not a few outliers: over 1 % of the responses
  # torchvision scale (r <= 2.6): alpha * sum <= 1e-4 * 2.5 * (0.19 * 2.6)^2 * (a few) ~ 3e-4:
  # a constant divisor 2^0.75 to within 1e-3, i.e. a fixed rescaling, no normalisation at all.
  old = lrn_divisor(activations['torchvision']['a1']) / LRN_FLOOR
  np.testing.assert_allclose(old, 1.0, atol=1e-3)


def test_bias_one_layers_depend_on_the_image(activations):  # fails on the old registry
  raw, old = activations['registered'], activations['torchvision']
  # conv2 = 1 + sum of 48 * 5 * 5 = 1200 terms w * p, w ~ N(0, 0.01): its spread around the bias
  # is 0.01 * sqrt(1200) * rms(p) (by hand, for independent weights).
  for acts in (raw, old):
    expected = 0.01 * np.sqrt(1200) * np.sqrt(np.mean(np.square(acts['p1'])))
    assert np.std(acts['z2'] - 1) == pytest.approx(expected, rel=0.25)
  assert np.std(raw['z2']) > 1.0  # the image outweighs the bias 1 (measured ~2.6)
  assert np.std(old['z2']) < 0.1  # conv2 ~ 1 everywhere, whatever the image (measured ~0.05)
  # fc6 (bias 1): how much its pre-activation changes between the two photos, relative to its
  # image-independent spread. Shrinking the input 58x shrinks every image-dependent term while the
  # biases stay, so the old scale barely sees the image. Thresholds: regression pins around the
  # measured 0.05 (raw) and 0.0013 (torchvision scale).
  def dependence(z6):
    return np.sqrt(np.mean(np.square(z6[0] - z6[1]))) / np.std(z6 - 1)
  assert dependence(raw['z6']) > 0.02
  assert dependence(old['z6']) < 0.005
  assert dependence(raw['z6']) > 10 * dependence(old['z6'])


def test_tour_lrn_experiment_feeds_raw_pixels():
  exp = tour.EXPERIMENTS['lrn_pooling']
  c = tour.make_config(exp, exp.variants[1], seed=0, steps=1, dataset='fashion_mnist')
  mean, std, _, _ = data.model_preprocessing(c.data, c.model.name)
  flat = transforms.Transform(None, 28, 28, mean, std)(np.full((28, 28, 1), 255, np.uint8))
  # 255 minus Fashion-MNIST's mean pixel 72.94 (the mean of its 60,000 training images).
  np.testing.assert_allclose(flat, 255 - 72.94, atol=1e-3)
