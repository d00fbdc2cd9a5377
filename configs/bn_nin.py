"""BN-NiN: NiN with BatchNorm, as soumith/imagenet-multiGPU.torch `models/ninbn.lua` (the network
Canziani et al. 2016 benchmark).

The model file's header gives the regime: lr 0.1 (epochs 1-9), 0.01 (10-19), 0.001 (20-25), 1e-4
(26-30); weight decay 5e-4 for epochs 1-19, 0 afterwards; "62.6 % top1 on validation set at 35
epochs". imagenet-multiGPU.torch trains with SGD momentum 0.9, batch 128 and random 224 crops of
256-scaled images with flips; we train 35 epochs (the last 5 at 1e-4). Weight decay: coupled L2 on
all parameters (Torch's `weightDecay`).

Expected: 62.6 % top-1 accuracy, 1 centre crop (ninbn.lua header).

  python train.py --config=configs/bn_nin.py --workdir=runs/bn_nin --config.data.data_dir=DIR
  python train.py --config=configs/bn_nin.py:runlocal --workdir=/tmp/bn_nin_local    # CPU, < 3 min

Hardware/time: 8.7 M parameters, 1.26 GMACs per image; 35 epochs are ~45 M images: about half a day
to a day on one modern GPU (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'bn_nin'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'alexnet'
  c.image_size = 224
  c.batch_size = 128
  c.num_epochs = 35.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_until_epoch = 19.0
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'step'
  c.schedule.factor = 0.1
  c.schedule.boundaries_epochs = (9.0, 19.0, 25.0)
  if args.runlocal:
    config_lib.apply_runlocal(c, 'bn_nin_tiny')
  return c
