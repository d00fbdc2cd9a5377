"""ResNet-18/34/50/101/152: He, Zhang, Ren, Sun 2016 (CVPR), "Deep Residual Learning", §3.4.

variant=paper (default): SGD batch 256, momentum 0.9, weight decay 1e-4 (coupled L2, all parameters),
  lr 0.1 divided by 10 when the error plateaus, no dropout; scale augmentation (short side in
  [256, 480]), random 224 crop, flip (`augment='resnet'`). The plateau points are fixed at epochs 30
  and 60 of 90, as in the authors' Torch re-implementation (fb.resnet.torch) and torchvision's
  reference recipe. Networks: torchvision's v1.5 (stride on the 3x3 of the bottleneck).
variant=cosine: the same with 5 epochs of linear warmup then cosine decay to 0 (Goyal et al. 2017;
  Loshchilov & Hutter 2017), label smoothing 0.1 and no weight decay on biases and BatchNorm
  (`decay_mask='kernels'`), as in NVIDIA's DeepLearningExamples ResNet-50 v1.5 recipe.

Expected (1-crop, 224, val): torchvision V1 accuracy, top-1/top-5: 18: 69.8/89.1, 34: 73.3/91.4,
50: 76.1/92.9, 101: 77.4/93.5, 152: 78.3/94.0. Paper Table 3 (10-crop) top-1 error: 50: 22.85,
101: 21.75, 152: 21.43. cosine: NVIDIA reports 77.1 % top-1 for ResNet-50 in 90 epochs with a
related recipe (different lr and wd); ours is not measured.

  python train.py --config=configs/resnet.py:depth=50 --workdir=runs/resnet50 --config.data.data_dir=DIR
  python train.py --config=configs/resnet.py:depth=50,variant=cosine --workdir=runs/resnet50_cos
  python train.py --config=configs/resnet.py:depth=50,runlocal --workdir=/tmp/r50_local  # CPU, < 3 min

Hardware/time: ResNet-50 is 25.6 M parameters and 4.1 GMACs per image; 90 epochs are 115 M images.
NVIDIA's tuned PyTorch stack does ~2,500 img/s per A100 in AMP (NVIDIA DeepLearningExamples,
ResNet-50 v1.5 README), i.e. ~13 h on one
A100; this JAX code is not yet measured at that scale.
"""

from cnn_jax import config as config_lib

DEPTHS = (18, 34, 50, 101, 152)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, depth=50, variant='paper')
  if args.depth not in DEPTHS:
    raise ValueError(f'depth={args.depth}: ResNet depths are {DEPTHS}')
  c = config_lib.base_config()
  c.model.name = f'resnet{args.depth}'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'resnet'
  c.image_size = 224
  c.batch_size = 256
  c.num_epochs = 90.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  if args.variant == 'paper':
    c.optimizer.decay_mask = 'all'
    c.schedule.name = 'step'
    c.schedule.factor = 0.1
    c.schedule.boundaries_epochs = (30.0, 60.0)
  elif args.variant == 'cosine':
    c.optimizer.decay_mask = 'kernels'
    c.label_smoothing = 0.1
    c.schedule.name = 'warmup_cosine'
    c.schedule.warmup_epochs = 5.0
  else:
    raise ValueError(f"variant={args.variant!r}: use 'paper' or 'cosine'")
  if args.runlocal:
    config_lib.apply_runlocal(c, 'resnet_tiny' if args.depth < 50 else 'resnet_tiny_bottleneck')
  return c
