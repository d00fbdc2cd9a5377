"""torchvision weight import: the converted models give torchvision's logits (fp32, eval mode).

Each parity test builds torchvision's model with random weights and random BatchNorm statistics,
converts its state_dict, and compares logits on the same random images (batch 2, small sizes):
max |difference| <= 1e-4 * max |logit|. Needs the optional torch extra (requirements-torch.txt).
"""

import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch', reason='weight import tests need torch: '
                            'pip install -r requirements-torch.txt')
torchvision = pytest.importorskip('torchvision', reason='weight import tests need torchvision: '
                                  'pip install -r requirements-torch.txt')

from cnn_jax import convert, load, models  # pylint: disable=g-import-not-at-top,g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
slow = pytest.mark.slow

# (torchvision name, image size, torchvision kwargs). Ten classes where torchvision allows it, so
# that the class count is read from the state_dict; alexnet keeps 1000.
PARITY = [
    ('alexnet', 63, {}),
    ('vgg11', 64, {'num_classes': 10}),
    ('vgg11_bn', 64, {'num_classes': 10}),
    pytest.param('vgg13', 64, {'num_classes': 10}, marks=slow),
    pytest.param('vgg13_bn', 64, {'num_classes': 10}, marks=slow),
    pytest.param('vgg16', 64, {'num_classes': 10}, marks=slow),
    pytest.param('vgg16_bn', 64, {'num_classes': 10}, marks=slow),
    pytest.param('vgg19', 64, {'num_classes': 10}, marks=slow),
    pytest.param('vgg19_bn', 64, {'num_classes': 10}, marks=slow),
    ('squeezenet1_0', 64, {'num_classes': 10}),
    ('squeezenet1_1', 64, {'num_classes': 10}),
    ('mobilenet_v2', 64, {'num_classes': 10}),
    ('resnet18', 64, {'num_classes': 10}),
    pytest.param('resnet34', 64, {'num_classes': 10}, marks=slow),
    ('resnet50', 64, {'num_classes': 10}),
    pytest.param('resnet101', 64, {'num_classes': 10}, marks=slow),
    pytest.param('resnet152', 64, {'num_classes': 10}, marks=slow),
    pytest.param('densenet121', 64, {'num_classes': 10}, marks=slow),
    # torchvision's transform_input=True for pretrained weights; converting turns ours on too.
    ('googlenet', 64, {'num_classes': 10, 'transform_input': True, 'init_weights': True}),
    pytest.param('inception_v3', 96, {'num_classes': 10, 'transform_input': True,
                                      'init_weights': True}, marks=slow),
]


def _torchvision_model(name, **kwargs):
  """torchvision's `name`, eval mode, random weights and non-trivial BatchNorm statistics."""
  torch.manual_seed(0)
  model = torchvision.models.get_model(name, **kwargs).eval()
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.5, 0.5)
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
  return model


def _logits(model, images):
  """Our model's eval logits for NCHW torch images, jitted."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
  return np.asarray(forward(state, jnp.asarray(images.numpy().transpose(0, 2, 3, 1))))


def _assert_same_logits(name, got, want):
  diff, scale = np.abs(got - want).max(), np.abs(want).max()
  print(f'{name}: max |diff| {diff:.3g}, max |logit| {scale:.3g}, ratio {diff / scale:.3g}')
  assert got.shape == want.shape
  assert scale > 0
  assert diff <= 1e-4 * scale


@pytest.mark.parametrize('name,size,kwargs', PARITY)
def test_logits_match_torchvision(name, size, kwargs):
  reference = _torchvision_model(name, **kwargs)
  images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = reference(images).numpy()
  model = convert.load_model(name, reference.state_dict())
  _assert_same_logits(name, _logits(model, images), want)


def test_every_supported_model_is_registered_and_tested():
  tested = {p.values[0] if hasattr(p, 'values') else p[0] for p in PARITY}
  assert set(convert.supported_models()) == tested
  assert tested <= set(models.list_models())


def test_mismatch_lists_missing_and_unexpected_keys():
  state_dict = torchvision.models.alexnet(num_classes=10).state_dict()
  del state_dict['features.3.bias']
  state_dict['features.99.weight'] = torch.zeros(3)
  with pytest.raises(ValueError, match=r'(?s)missing keys \(1\): features\.3\.bias \(for our '
                     r'convs\.1\.bias\).*unexpected keys \(1\): features\.99\.weight'):
    convert.convert_state_dict('alexnet', state_dict)


def test_wrong_architecture_names_the_difference():
  state_dict = torchvision.models.vgg11(num_classes=10).state_dict()
  with pytest.raises(ValueError, match=r'our bns has 8 modules, torch features\.\* has 0 bn'):
    convert.convert_state_dict('vgg11_bn', state_dict)


def test_unknown_model_lists_supported_ones():
  with pytest.raises(KeyError, match=r'resnet9.*supported models: alexnet, vgg11'):
    convert.convert_state_dict('resnet9', {})


def test_read_state_dict_refuses_arbitrary_pickles(tmp_path):
  path = tmp_path / 'evil.pth'
  torch.save({'weight': torch.zeros(1), 'payload': pickle.PickleError('not a tensor')}, path)
  # torch's weights_only unpickler refuses it; the message says how to save weights instead.
  with pytest.raises(ValueError, match=r'evil\.pth is no file of tensors.*model\.state_dict\(\)'):
    convert.read_state_dict(str(path))


def test_read_state_dict_unwraps_training_checkpoints(tmp_path):
  path = tmp_path / 'ckpt.pth'
  torch.save({'epoch': 3, 'state_dict': {'module.fc.weight': torch.ones(2, 3)}}, path)
  state_dict = convert.read_state_dict(str(path))
  assert list(state_dict) == ['fc.weight']
  np.testing.assert_array_equal(state_dict['fc.weight'].numpy(), np.ones((2, 3)))


@slow
def test_cli_writes_a_checkpoint_that_restores_to_the_same_logits(tmp_path):
  reference = _torchvision_model('squeezenet1_1', num_classes=10)
  torch.save(reference.state_dict(), tmp_path / 'squeezenet.pth')
  out = tmp_path / 'converted'
  subprocess.run(
      [sys.executable, '-m', 'cnn_jax.convert', 'torchvision', '--model', 'squeezenet1_1',
       '--weights', str(tmp_path / 'squeezenet.pth'), '--out', str(out)],
      check=True, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert convert.weights.metadata(str(out))['model_kwargs'] == {'num_classes': 10}
  images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    want = reference(images).numpy()
  restored = load.restore(load.locate(str(out))).model()
  _assert_same_logits('squeezenet1_1 (restored)', _logits(restored, images), want)


def test_model_options_follow_the_state_dict():
  no_aux = torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=False)
  assert convert.model_kwargs('googlenet', no_aux.state_dict()) == {
      'num_classes': 10, 'aux_logits': False, 'transform_input': True}
  with_aux = torchvision.models.googlenet(num_classes=5, aux_logits=True, init_weights=False)
  assert convert.model_kwargs('googlenet', with_aux.state_dict())['aux_logits']


def test_copy_into_fine_tunes_to_another_class_count(tmp_path):
  reference = _torchvision_model('squeezenet1_1', num_classes=10)
  saved = convert.load_model('squeezenet1_1', reference.state_dict())
  convert.weights.save(str(tmp_path / 'w'), 'squeezenet1_1',
                       nnx.state(saved, convert.weights.WEIGHTS), {'num_classes': 10})
  model = convert.load_model('squeezenet1_1', _torchvision_model('squeezenet1_1', num_classes=3)
                             .state_dict())  # random weights, faster than eager init
  head = np.asarray(model.final_conv.kernel.value)
  weights = load.restore(load.locate(str(tmp_path / 'w'))).weights
  with pytest.raises(ValueError, match=r'different shapes final_conv\.bias \(10,\) -> \(3,\)'):
    convert.weights.copy_into(model, weights, 'the saved weights')
  assert convert.weights.copy_into(model, weights, 'the saved weights', keep_mismatched=True) == [
      'final_conv.bias', 'final_conv.kernel']
  np.testing.assert_array_equal(model.fire9.expand3x3.kernel.value,
                                saved.fire9.expand3x3.kernel.value)
  np.testing.assert_array_equal(model.final_conv.kernel.value, head)
