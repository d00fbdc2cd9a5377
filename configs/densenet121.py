"""DenseNet-121: Huang et al. 2017, "Densely Connected Convolutional Networks" (arXiv 1608.06993).

§4.2 (ImageNet): SGD with Nesterov momentum 0.9 (no dampening), batch 256, 90 epochs, lr 0.1 divided
by 10 at epochs 30 and 60, weight decay 1e-4, the augmentation of fb.resnet.torch (`augment='resnet'`).

Expected: torchvision's weights 74.4 % / 92.0 % top-1/top-5 (1-crop); the paper's Table 3 gives
25.02 % / 7.71 % top-1/top-5 error (single-crop, recalled, not verified here).

  python train.py --config=configs/densenet121.py --workdir=runs/densenet121 --config.data.data_dir=DIR
  python train.py --config=configs/densenet121.py:runlocal --workdir=/tmp/densenet_local  # CPU

Hardware/time: 8.0 M parameters, 2.83 GMACs per image; activation memory is high (every layer's
input is a concatenation): about 2 days on one modern GPU for 90 epochs (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'densenet121'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'resnet'
  c.image_size = 224
  c.batch_size = 256
  c.num_epochs = 90.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 1e-4
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'step'
  c.schedule.factor = 0.1
  c.schedule.boundaries_epochs = (30.0, 60.0)
  if args.runlocal:
    config_lib.apply_runlocal(c, 'densenet_tiny')
  return c
