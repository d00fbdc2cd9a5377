"""VGG-16 / VGG-19 (configurations D / E): Simonyan & Zisserman 2015 (ICLR), "Very Deep
Convolutional Networks". `:depth=16` (default) or `:depth=19`; the recipe is the same.

§3.1: SGD batch 256, momentum 0.9, weight decay 5e-4 (coupled L2, all parameters as in Caffe's
default), dropout 0.5 on fc6/fc7 (in the model), lr 0.01 divided by 10 when the validation accuracy
stops improving (3 times in the paper), stopped after 370 K iterations (74 epochs). Training images:
scale jittering S in [256, 512], random 224 crop, flip, RGB colour shift (`augment='vgg'`).
Initialisation: torchvision's (Kaiming normal, fan_out) instead of the paper's pre-training from
configuration A; the paper notes random init works (Glorot) without pre-training. The plateau rule
uses `optax.contrib.reduce_on_plateau` on the validation top-1 error, evaluated each epoch, with a
patience of 2 epochs (the paper gives none).

Expected: paper Table 3, S in [256;512], Q = 384 (dense), top-1/top-5 error: D 25.6 % / 8.1 %,
E 25.5 % / 8.0 %. 1-crop at 224 (torchvision IMAGENET1K_V1, trained with a similar recipe),
top-1/top-5 accuracy: VGG-16 71.6 % / 90.4 %, VGG-19 72.4 % / 90.9 %.

  python train.py --config=configs/vgg.py --workdir=runs/vgg16 --config.data.data_dir=DIR
  python train.py --config=configs/vgg.py:depth=19 --workdir=runs/vgg19 --config.data.data_dir=DIR
  python train.py --config=configs/vgg.py:runlocal --workdir=/tmp/vgg_local    # CPU, < 3 min

Hardware/time: the paper used 4 Titan Black GPUs for 2-3 weeks per net. VGG-16: 138 M parameters,
15.5 GMACs per image; VGG-19: 144 M, 19.6 GMACs. 74 epochs are ~95 M images, several days on 8
modern GPUs with bf16 (not measured here). Use grad_accum_steps if batch 256 does not fit.
"""

from cnn_jax import config as config_lib

DEPTHS = (16, 19)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, depth=16)
  if args.depth not in DEPTHS:
    raise ValueError(f'depth={args.depth}: this recipe trains VGG depths {DEPTHS} (configurations '
                     'D and E); use :depth=16 or :depth=19')
  c = config_lib.base_config()
  c.model.name = f'vgg{args.depth}'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'vgg'
  c.image_size = 224
  c.batch_size = 256
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
  if args.runlocal:
    config_lib.apply_runlocal(c, 'vgg_tiny')
  return c
