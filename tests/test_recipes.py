"""Every recipe in configs/ against a table written from the papers and the recipes' stated sources.

Each row says where each number comes from. Legend: [P] the paper (section given), [S] the named
public source the paper does not replace (torchvision's references/classification README, BVLC
Caffe's or forresti/SqueezeNet's solver and train_val prototxt, TF-slim's nets and
train_image_classifier, soumith/imagenet-multiGPU.torch), [D] a deliberate deviation or our choice,
stated in the config's docstring. Nothing here is read from the configs.

What weight decay applies to: 'kernels' = conv and fully connected weights only (cuda-convnet's
per-layer `wc`, Caffe's `decay_mult: 0` on biases, TF-slim's `weights_regularizer`); 'all' = every
parameter (PyTorch's and Torch's `weightDecay`, Caffe's default `decay_mult: 1`).
"""

import dataclasses

import jax
import pytest
from flax import nnx

from cnn_jax import config as config_lib, models, optim
from test_configs import CONFIGS, recipe  # tests/ is on sys.path under pytest


@dataclasses.dataclass(frozen=True)
class Row:
  """One recipe. schedule: ('step', factor, boundaries) | ('exponential', factor, every_epochs) |
  ('plateau', factor, max_reductions) | ('linear',) | ('warmup_cosine', warmup_epochs)."""
  batch_size: int
  lr: float
  momentum: float
  weight_decay: float
  decays: str
  schedule: tuple
  epochs: float
  image_size: int
  optimizer: str = 'sgd'
  nesterov: bool = False
  label_smoothing: float = 0.0
  aux_loss_weight: float = 0.0
  ema_decay: float = 0.0
  weight_decay_until_epoch: float = 0.0
  rmsprop: tuple = ()  # (decay, eps) for 'rmsprop'
  grad_clip_norm: float = 0.0


TABLE = {
    # Krizhevsky et al. 2012 §5 [P]: SGD batch 128, momentum 0.9, wd 5e-4, lr 0.01 /10 when the
    # validation error stops improving, 3 times, ~90 epochs; decays weights only (cuda-convnet layer
    # `wc`; biases have none) [S]; 227 px: §3.5's 224 does not fit the conv1 arithmetic [P].
    ('alexnet', None): Row(128, 0.01, 0.9, 5e-4, 'kernels', ('plateau', 0.1, 3), 90, 227),
    # torchvision references/classification README [S]: lr 0.01, batch 256 (8 x 32), wd 1e-4 on all
    # parameters, StepLR(30, 0.1), 90 epochs, 224 px.
    ('alexnet', 'variant=torchvision'): Row(256, 0.01, 0.9, 1e-4, 'all', ('step', 0.1, (30, 60)),
                                           90, 224),
    # Simonyan & Zisserman 2015 §3.1 [P]: batch 256, momentum 0.9, L2 5e-4, lr 0.01 /10 when the
    # validation accuracy stops improving (3 times), 370 K iterations = 74 epochs, 224 crops;
    # decay on all parameters: Caffe's default decay_mult 1 [D: the paper does not say].
    ('vgg', None): Row(256, 0.01, 0.9, 5e-4, 'all', ('plateau', 0.1, 3), 74, 224),
    ('vgg', 'depth=19'): Row(256, 0.01, 0.9, 5e-4, 'all', ('plateau', 0.1, 3), 74, 224),
    # Szegedy et al. 2015 §5-§6 [P]: momentum 0.9, lr -4 % every 8 epochs, aux weight 0.3, Polyak
    # averaging, 224 px (§5). BVLC Caffe bvlc_googlenet solver [S]: lr 0.01, wd 2e-4, step x0.96
    # every 320 K iterations of 32 (8 epochs); its train_val decays weights only (decay_mult 0 on
    # biases). [D]: batch 256 synchronous, 60 epochs, the average is TF's EMA with decay 0.9999.
    ('googlenet', None): Row(256, 0.01, 0.9, 2e-4, 'kernels', ('exponential', 0.96, 8.0), 60, 224,
                             aux_loss_weight=0.3, ema_decay=0.9999),
    # Szegedy et al. 2016 "Rethinking" §8 [P]: RMSProp decay 0.9 eps 1.0, lr 0.045 x0.94 every 2
    # epochs, clipping 2.0, 100 epochs, evaluation on a running average; §7 label smoothing 0.1;
    # 299 px. TF-slim [S]: RMSProp momentum 0.9, wd 4e-5 on conv/FC weights only
    # (inception_v3_arg_scope), moving_average_decay 0.9999, aux logits weight 0.4.
    # [D]: batch 256 synchronous (paper: 50 asynchronous replicas x 32).
    ('inception_v3', None): Row(256, 0.045, 0.9, 4e-5, 'kernels', ('exponential', 0.94, 2.0), 100,
                                299, optimizer='rmsprop', label_smoothing=0.1,
                                aux_loss_weight=0.4, ema_decay=0.9999, rmsprop=(0.9, 1.0),
                                grad_clip_norm=2.0),
    # Szegedy et al. 2016 "Inception-v4" §4 [P]: RMSProp decay 0.9 eps 1.0, lr 0.045 x0.94 every
    # 2 epochs, running average for evaluation; 299 px. TF-slim [S]: momentum 0.9, wd 4e-5 on
    # conv/FC weights (inception_v4_arg_scope), average decay 0.9999. [D]: batch 256, 100 epochs and
    # label smoothing 0.1 from Inception v3; no aux head.
    ('inception_v4', None): Row(256, 0.045, 0.9, 4e-5, 'kernels', ('exponential', 0.94, 2.0), 100,
                                299, optimizer='rmsprop', label_smoothing=0.1, ema_decay=0.9999,
                                rmsprop=(0.9, 1.0)),
    # He et al. 2016 §3.4 [P]: SGD batch 256, lr 0.1 /10 on plateaus, wd 1e-4, momentum 0.9, 224
    # crops. torchvision README [S]: StepLR(30, 0.1), 90 epochs, wd on all parameters.
    ('resnet', 'depth=50'): Row(256, 0.1, 0.9, 1e-4, 'all', ('step', 0.1, (30, 60)), 90, 224),
    # [D] the cosine variant: 5 warmup epochs (Goyal et al. 2017) then cosine; label smoothing 0.1
    # and no decay on biases/BN as NVIDIA DeepLearningExamples ResNet-50 v1.5; lr and wd the paper's.
    ('resnet', 'depth=50,variant=cosine'): Row(256, 0.1, 0.9, 1e-4, 'kernels',
                                               ('warmup_cosine', 5.0), 90, 224,
                                               label_smoothing=0.1),
    # NiN has no ImageNet recipe in its paper [D]: the AlexNet-era recipe (Krizhevsky §5 numbers,
    # Caffe-style decay on all parameters), plateau /10 three times.
    ('nin', None): Row(128, 0.01, 0.9, 5e-4, 'all', ('plateau', 0.1, 3), 90, 224),
    # imagenet-multiGPU.torch ninbn.lua regime [S]: lr 0.1 (epochs 1-9), 0.01 (10-19), 0.001
    # (20-25), 1e-4 (26-30); wd 5e-4 for epochs 1-19, 0 after; batch 128, momentum 0.9 (the script's
    # defaults), 224 crops; "62.6 % at 35 epochs" -> 35 epochs. Torch's weightDecay: all parameters.
    ('bn_nin', None): Row(128, 0.1, 0.9, 5e-4, 'all', ('step', 0.1, (9, 19, 25)), 35, 224,
                          weight_decay_until_epoch=19.0),
    # forresti/SqueezeNet SqueezeNet_v1.0/solver.prototxt [S] (the paper has no recipe): base_lr
    # 0.04, "poly" power 1 (linear to 0), max_iter 170 K x batch 32 x iter_size 16 = 512 (68
    # epochs), momentum 0.9, weight_decay 2e-4, no decay_mult in train_val (all parameters).
    # [D]: 224 px crops (Caffe's crop_size 227).
    ('squeezenet', None): Row(512, 0.04, 0.9, 2e-4, 'all', ('linear',), 68, 224),
    # Huang et al. 2017 §4.2 [P]: SGD batch 256, 90 epochs, lr 0.1 /10 at epochs 30 and 60, wd 1e-4,
    # Nesterov momentum 0.9 (no dampening); 224 crops. All parameters: their Torch code (fb.resnet.
    # torch) [S].
    ('densenet121', None): Row(256, 0.1, 0.9, 1e-4, 'all', ('step', 0.1, (30, 60)), 90, 224,
                               nesterov=True),
    # torchvision README, MobileNetV2 [S]: SGD momentum 0.9, batch 256, 300 epochs, lr 0.045,
    # wd 4e-5 (all parameters), StepLR(1, 0.98). [D] instead of Sandler et al. 2018 §6.1 [P]:
    # RMSProp (decay 0.9, momentum 0.9), wd 4e-5, lr 0.045 x0.98 per epoch, batch 96 x 16 GPUs.
    ('mobilenet_v2', None): Row(256, 0.045, 0.9, 4e-5, 'all', ('exponential', 0.98, 1.0), 300, 224),
    # Culurciello, "Training ENet on ImageNet" (2016) with imagenet-multiGPU.torch [S]: momentum 0.9,
    # batch 128, lr 1e-2, wd 5e-4 until epoch 15, 224 crops. [D]: one factor 0.5 at epochs 10, 15,
    # 20, 30 (the post's 5e-3, 1e-3, 5e-4, 1e-4 need several), 35 epochs.
    ('enet', None): Row(128, 0.01, 0.9, 5e-4, 'all', ('step', 0.5, (10, 15, 20, 30)), 35, 224,
                        weight_decay_until_epoch=15.0),
}


def _schedule(c):
  s = c.schedule
  return {'step': lambda: ('step', s.factor, tuple(s.boundaries_epochs)),
          'exponential': lambda: ('exponential', s.factor, s.decay_epochs),
          'plateau': lambda: ('plateau', s.factor, s.max_reductions),
          'linear': lambda: ('linear',),
          'warmup_cosine': lambda: ('warmup_cosine', s.warmup_epochs)}[s.name]()


def test_every_recipe_is_in_the_table():
  assert {p.stem for p in CONFIGS} - {'quickstart'} == {name for name, _ in TABLE}


@pytest.mark.parametrize('name, arg', list(TABLE), ids=lambda x: x)
def test_recipe_matches_its_sources(name, arg):
  row, c = TABLE[name, arg], recipe(name).get_config(arg)
  o = c.optimizer
  got = Row(c.batch_size, o.lr, o.momentum, o.weight_decay, o.decay_mask, _schedule(c),
            c.num_epochs, c.image_size, o.name, o.nesterov, c.label_smoothing, c.aux_loss_weight,
            c.ema_decay, o.weight_decay_until_epoch,
            (o.rmsprop_decay, o.eps) if o.name == 'rmsprop' else (), o.grad_clip_norm)
  assert got == row


KERNEL_RECIPES = sorted({name for (name, arg), row in TABLE.items()
                         if row.decays == 'kernels' and arg is None})


@pytest.mark.parametrize('name', KERNEL_RECIPES)
def test_kernels_mask_decays_exactly_the_conv_and_dense_weights(name):
  """On the recipe's full model (abstract, nothing computed): the decayed leaves are the `kernel`s of
  the convolutions and dense layers; biases and BatchNorm scale/offset are not."""
  config = recipe(name).get_config()
  model = nnx.eval_shape(lambda: models.create(config.model.name, 1000, rngs=nnx.Rngs(0),
                                               **config.model.kwargs.to_dict()))
  params = nnx.state(model, nnx.Param)
  decayed = optim.decay_mask(config.optimizer.decay_mask)(params)
  names = jax.tree_util.tree_flatten_with_path(params)[0]
  flags = jax.tree.leaves(decayed)
  assert len(names) == len(flags) and any(flags)
  for (path, _), flag in zip(names, flags, strict=True):
    leaf = [str(k.key) for k in path if hasattr(k, 'key')][-1]
    assert flag == (leaf == 'kernel'), (jax.tree_util.keystr(path), flag)


def test_unknown_augment_fails_in_validate():
  config = recipe('resnet').get_config()
  config.data.augment = 'inceptoin'
  with pytest.raises(ValueError, match=r"data.augment='inceptoin' is not one of .*'inception'"):
    config_lib.validate(config)
