"""SqueezeNet 1.0 / 1.1: Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size" (arXiv 1602.07360).

The paper gives no training recipe; the authors' Caffe solver (forresti/SqueezeNet
`SqueezeNet_v1.0/solver.prototxt`) has: SGD momentum 0.9, base lr 0.04 decayed linearly to 0 ("poly",
power 1) over max_iter 170 K iterations of batch 32 x iter_size 16 = 512 (170 K x 512 / 1.28 M = 68
epochs), weight decay 2e-4 on every parameter (its train_val.prototxt sets no decay_mult), random 227
crops of 256 px images and flips. Deviations: 224 px crops (torchvision's size for these networks) with
AlexNet's PCA lighting (`augment='alexnet'`), which the Caffe data layer does not do.
`:version=1_1` trains SqueezeNet 1.1.

Expected: torchvision's weights, 58.1 % / 80.4 % top-1/top-5 (1.0), 58.2 % / 80.6 % (1.1); the paper
reports 57.5 % / 80.3 % (Table 2).

  python train.py --config=configs/squeezenet.py --workdir=runs/squeezenet --config.data.data_dir=DIR
  python train.py --config=configs/squeezenet.py:runlocal --workdir=/tmp/squeezenet_local  # CPU

Hardware/time: 1.2 M parameters, 0.82 (1.0) / 0.35 (1.1) GMACs per image; input-pipeline bound on a
modern GPU (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, version='1_0')
  if args.version not in ('1_0', '1_1'):
    raise ValueError(f"version={args.version!r}: use '1_0' or '1_1'")
  c = config_lib.base_config()
  c.model.name = f'squeezenet{args.version}'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'alexnet'
  c.image_size = 224
  c.batch_size = 512
  c.num_epochs = 68.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.04
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 2e-4
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'linear'
  if args.runlocal:
    config_lib.apply_runlocal(c, 'squeezenet_tiny')
  return c
