"""VGG-19 (configuration E): Simonyan & Zisserman 2015 (ICLR), "Very Deep Convolutional Networks".

§3.1: SGD batch 256, momentum 0.9, weight decay 5e-4 (coupled L2, all parameters as in Caffe's
default), dropout 0.5 on fc6/fc7 (in the model), lr 0.01 divided by 10 when the validation accuracy
stops improving (3 times in the paper), stopped after 370 K iterations (74 epochs). Training images:
scale jittering S in [256, 512], random 224 crop, flip, RGB colour shift (`augment='vgg'`).
Initialisation: torchvision's (Kaiming normal, fan_out) instead of the paper's pre-training from
configuration A; the paper notes random init works (Glorot) without pre-training. The plateau rule
uses `optax.contrib.reduce_on_plateau` on the validation top-1 error, evaluated each epoch, with a
patience of 2 epochs (the paper gives none).

Expected: paper Table 3, E with S in [256;512], Q = 384 (dense): 25.5 % / 8.0 % top-1/top-5 error;
1-crop at 224 (torchvision IMAGENET1K_V1, trained with a similar recipe): 72.4 % / 90.9 % accuracy.

  python train.py --config=configs/vgg19.py --workdir=runs/vgg19 --config.data.data_dir=DIR
  python train.py --config=configs/vgg19.py:runlocal --workdir=/tmp/vgg19_local    # CPU, < 3 min

Hardware/time: the paper used 4 Titan Black GPUs for 2-3 weeks per net. 144 M parameters; 19.6 GMACs
per image: 74 epochs are ~95 M images, several days on 8 modern GPUs with bf16 (not measured here).
Use grad_accum_steps if batch 256 does not fit.
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'vgg19'
  c.data.name = 'imagenet2012'
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.augment = 'vgg'
  c.image_size = 224
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_epochs = 74.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'plateau'
  c.schedule.factor = 0.1
  c.schedule.patience = 2
  c.schedule.max_reductions = 3
  c.eval_every_steps = 0
  c.log_every_steps = 100
  if args.runlocal:
    config_lib.apply_runlocal(c, 'vgg_tiny')
  return c
