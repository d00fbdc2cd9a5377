"""Issue 14: every model's convolutions are `cnn_jax.kernels`' (oneDNN on CPU), and GPU readiness:
the trainer's jitted train step of every registered model, exported for CUDA on
this CPU machine (`jax.export` lowers for a platform without its devices), holds no CPU-only
custom call: the oneDNN convolutions of `cnn_jax.kernels` are chosen per platform at lowering, so
a GPU run gets XLA's convolution. Exporting only traces and lowers (batch 2, the model's input
size). The models are the full-size networks, except where another registered network holds the
same modules: ResNet-34 stands in as ResNet-18, ResNet-50 v1, -101 and -152 as ResNet-50, VGG-11,
-13, -19 as VGG-16 (each with or without BN), and Inception v4 and DenseNet-121, whose tracing
takes tens of seconds, as their tiny variants (the same modules, fewer and narrower).
"""
import jax
import pytest
from flax import nnx

from cnn_jax import config as config_lib
from cnn_jax import kernels, models, trainer

ONEDNN_TARGETS = tuple(f'cnn_jax_onednn_conv_{kind}'
                       for kind in ('forward', 'backward_data', 'backward_weights')) + tuple(
    f'cnn_jax_onednn_max_pool_{kind}' for kind in ('forward', 'backward'))
STAND_INS = {'resnet34': 'resnet18', 'resnet50_v1': 'resnet50', 'resnet101': 'resnet50',
             'resnet152': 'resnet50', 'vgg11': 'vgg16', 'vgg13': 'vgg16', 'vgg19': 'vgg16',
             'vgg11_bn': 'vgg16_bn', 'vgg13_bn': 'vgg16_bn', 'vgg19_bn': 'vgg16_bn',
             'inception_v4': 'inception_v4_tiny', 'densenet121': 'densenet_tiny'}
MODELS = sorted({STAND_INS.get(name, name) for name in models.list_models()
                 if not models.get_info(name).tiny or name.startswith('tour_')})


def train_step(name: str, half_precision: bool = False) -> trainer.TrainStep:
  c = config_lib.base_config()
  c.model.name = name
  c.data.name = 'digits'
  c.image_size = models.get_info(name).input_size
  c.batch_size = 2
  c.optimizer.update(name='sgd', lr=0.1, momentum=0.9)
  c.schedule.name = 'constant'
  c.num_classes = 1000
  c.num_train_steps = 1
  c.half_precision = half_precision
  return trainer.train_step_fn(c)


def exported_text(step: trainer.TrainStep, platform: str) -> str:
  with jax.set_mesh(step.mesh):
    return jax.export.export(step.fn, platforms=[platform])(*step.args).mlir_module()


@pytest.mark.parametrize('name', models.list_models())
def test_every_convolution_of_every_model_is_the_kernels(name):
  """Issue 14: every registered model builds its convolutions with `kernels.conv_general_dilated`
  and adds their biases with `kernels.bias_add` (built abstractly: nothing is drawn or compiled)."""
  model = nnx.eval_shape(lambda: models.create(name))
  convs = [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Conv)]
  assert convs
  for path, conv in convs:
    assert conv.conv_general_dilated is kernels.conv_general_dilated, (name, path)
    assert conv.bias_add is kernels.bias_add, (name, path)


@pytest.mark.parametrize('name', MODELS)
def test_cuda_export_of_the_train_step_has_no_onednn_call(name):
  text = exported_text(train_step(name), 'cuda')
  assert 'stablehlo.convolution' in text
  assert not any(target in text for target in ONEDNN_TARGETS)
  assert '@cnn_jax_' not in text  # nor any other of the library's calls (BatchNorm, bias sums)


def test_cuda_export_in_bfloat16_has_no_onednn_call():
  """bf16 compute, the trainer's default on a GPU (`half_precision=None`)."""
  text = exported_text(train_step('resnet50', half_precision=True), 'cuda')
  assert 'stablehlo.convolution' in text and 'bf16' in text
  assert '@cnn_jax_' not in text


@pytest.mark.skipif(kernels.unavailable_reason() is not None,
                    reason=str(kernels.unavailable_reason()))
def test_cpu_lowering_of_the_same_step_calls_onednn():
  """The check above can fail: lowered for this CPU, the same step calls all five kernels and
  no XLA convolution is left."""
  step = train_step('resnet50')
  with jax.set_mesh(step.mesh):
    text = step.fn.lower(*step.args).as_text()
  assert all(target in text for target in ONEDNN_TARGETS)
  assert '@cnn_jax_batch_norm_sums' in text
  assert 'stablehlo.convolution' not in text
