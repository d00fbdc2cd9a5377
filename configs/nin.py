"""Network in Network (Lin, Chen, Yan 2014, ICLR): the ImageNet NIN of the authors' Caffe model zoo.

The paper reports no ImageNet recipe or result (its experiments are CIFAR/SVHN/MNIST). The Caffe
ImageNet NIN (`nin`, four mlpconv blocks + global average pooling) is listed at 56.7 % / 79.5 % top-1 /
top-5 accuracy (BVLC Caffe wiki "Models accuracy on ImageNet 2012 val", 1 centre crop; a secondary
source). Its solver is not verified here, so this recipe is the AlexNet-era
ImageNet recipe the NIN model shares: SGD batch 128, momentum 0.9, weight decay 5e-4 (coupled L2, all
parameters), lr 0.01 divided by 10 on validation plateau (3 times, patience 2 epochs), 90 epochs,
AlexNet augmentation (random crop, flip, PCA lighting).

Expected: about 56.7 % / 79.5 % top-1/top-5 accuracy (the Caffe model's, above): a target, not a
reproduction of a documented run.

  python train.py --config=configs/nin.py --workdir=runs/nin --config.data.data_dir=DIR
  python train.py --config=configs/nin.py:runlocal --workdir=/tmp/nin_local    # CPU, < 3 min

Hardware/time: 7.6 M parameters, 1.1 GMACs per image: roughly 1-2 days on one modern GPU for 90
epochs (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'nin'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'alexnet'
  c.image_size = 224
  c.batch_size = 128
  c.num_epochs = 90.0
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
    config_lib.apply_runlocal(c, 'nin_tiny')
  return c
