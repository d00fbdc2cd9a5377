"""ENet for ImageNet: the ENet encoder (Paszke et al. 2016, arXiv 1606.02147) with a global-average-pool
and linear head (cnn_jax/models/enet.py says exactly what is built and what is ours).

Recipe: E. Culurciello, "Training ENet on ImageNet" (2016 blog post, trained with
soumith/imagenet-multiGPU.torch): SGD momentum 0.9 (that script's default), batch 128 (its default),
the "ENet V3" regime: lr 1e-2 for epochs 1-10, 5e-3 for 11-15, 1e-3 for 16-20, 5e-4 for 21-30, 1e-4
after; weight decay 5e-4 until epoch 15, 0 after; random 224 crops of 256 px images and flips.
Deviations: `augment='alexnet'` also adds PCA lighting; the trainer's step schedule has one factor, so the rates here are 1e-2, 5e-3, 2.5e-3,
1.25e-3, 6.25e-4 (x0.5 at epochs 10, 15, 20, 30); the post gives no total, we stop at 35 epochs.
`:variant=v2` trains `enet_v2` (two more downsampling bottlenecks, the post's "ENet V2").

Expected: no published accuracy; Canziani et al. 2016 Fig. 1 shows ENet near 68 % top-1 (read off
the plot, not verified).

  python train.py --config=configs/enet.py --workdir=runs/enet --config.data.data_dir=DIR
  python train.py --config=configs/enet.py:runlocal --workdir=/tmp/enet_local  # CPU

Hardware/time: 0.47 M parameters, 0.31 GMACs per image (enet_v2: 0.53 M, 0.24 GMACs);
input-pipeline bound on a modern GPU (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, variant='v1')
  if args.variant not in ('v1', 'v2'):
    raise ValueError(f"variant={args.variant!r}: use 'v1' (enet) or 'v2' (enet_v2)")
  c = config_lib.base_config()
  c.model.name = 'enet' if args.variant == 'v1' else 'enet_v2'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'alexnet'
  c.image_size = 224
  c.batch_size = 128
  c.num_epochs = 35.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_until_epoch = 15.0
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'step'
  c.schedule.factor = 0.5
  c.schedule.boundaries_epochs = (10.0, 15.0, 20.0, 30.0)
  if args.runlocal:
    config_lib.apply_runlocal(c, 'enet_tiny')
  return c
