"""AlexNet: Krizhevsky, Sutskever, Hinton 2012 (NIPS), "ImageNet Classification with Deep CNNs".

variant=paper (default): the 2012 two-tower network (`alexnet2012`: grouped conv2/4/5, LRN, 227 px,
  since the paper's 224 needs 227 for its arithmetic), §5: SGD batch 128, momentum 0.9, weight decay
  5e-4 (coupled: added to the gradient before momentum) on the weights only (cuda-convnet's per-layer
  `wc`; biases not decayed), lr 0.01 divided by 10 when the validation error stops improving, 3 times,
  about 90 epochs; §4.1 augmentation: 256x256 image, random 227 crop, flip, PCA lighting (sigma 0.1).
  The plateau rule (`optax.contrib.reduce_on_plateau` on the validation top-1 error, evaluated each
  epoch) waits `patience` = 3 epochs: the paper adjusted by hand and gives no number.
  Expected: top-1 / top-5 error 40.7 % / 18.2 % on ILSVRC-2012 val (Table 2, 1 CNN, 10-patch test);
  1-crop is about 1-1.5 points worse (footnote 5 for ILSVRC-2010: 39.0/18.3 vs 37.5/17.0).
variant=torchvision: torchvision's `alexnet` (One weird trick layout, 224 px) with its reference
  recipe (pytorch/vision references/classification): SGD lr 0.01, momentum 0.9, wd 1e-4 on all
  parameters, batch 256, lr x0.1 at epochs 30 and 60, 90 epochs, random-resized crop + flip.
  Expected: 56.5 % / 79.1 % top-1 / top-5 accuracy (torchvision IMAGENET1K_V1).
split=2 (paper variant): the paper's two-GPU model parallelism (§3.2): a ('data', 'model') mesh with
  'model' = 2, each device of a pair holding one tower and half of each FC layer
  (`AlexNet2012(tower_axis='model')`), data parallel over the remaining devices (any even count).
  Same network, same parameters: checkpoints move between split and unsplit runs.

  python train.py --config=configs/alexnet.py --workdir=runs/alexnet \
      --config.data.data_dir=/path/to/tensorflow_datasets      # ImageNet prepared by cnn_jax.data.prepare
  python train.py --config=configs/alexnet.py:variant=torchvision --workdir=runs/alexnet_tv
  python train.py --config=configs/alexnet.py:runlocal --workdir=/tmp/alexnet_local   # CPU, < 3 min
  python train.py --config=configs/alexnet.py:split=2 --workdir=runs/alexnet_split     # 2k GPUs
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python train.py --config=configs/alexnet.py:runlocal,split=2 --workdir=/tmp/alexnet_split

Hardware/time: the paper took 5-6 days on two GTX 580 3 GB; 90 epochs are 1.13 M steps of batch 128
(about 115 M images): expect roughly a day on one modern GPU, input pipeline permitting (not measured
here). Memory: 61 M parameters, fits any GPU at batch 128.
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, variant='paper', split=1)
  c = config_lib.base_config()
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.num_epochs = 90.0
  c.optimizer.name = 'sgd'
  c.optimizer.momentum = 0.9
  if args.variant == 'paper':
    c.model.name = 'alexnet2012'
    c.image_size = 227
    c.data.augment = 'alexnet'
    c.batch_size = 128
    c.optimizer.lr = 0.01
    c.optimizer.weight_decay = 5e-4
    c.optimizer.decay_mask = 'kernels'
    c.schedule.name = 'plateau'
    c.schedule.factor = 0.1
    c.schedule.patience = 3
    c.schedule.max_reductions = 3
  elif args.variant == 'torchvision':
    c.model.name = 'alexnet'
    c.image_size = 224
    c.data.augment = 'inception'
    c.batch_size = 256
    c.optimizer.lr = 0.01
    c.optimizer.weight_decay = 1e-4
    c.optimizer.decay_mask = 'all'
    c.schedule.name = 'step'
    c.schedule.factor = 0.1
    c.schedule.boundaries_epochs = (30.0, 60.0)
  else:
    raise ValueError(f"variant={args.variant!r}: use 'paper' or 'torchvision'")
  if args.split == 2 and args.variant == 'paper':
    c.mesh_shape.model = 2
    c.model.kwargs.tower_axis = 'model'
  elif args.split != 1:
    raise ValueError(f'split={args.split}: the paper splits its network (variant=paper) over 2 '
                     'devices; use split=2 with variant=paper, or split=1 (no model parallelism)')
  if args.runlocal:
    config_lib.apply_runlocal(c, 'alexnet2012_tiny')
  return c
