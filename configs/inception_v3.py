"""Inception v3: Szegedy et al. 2016 (CVPR), "Rethinking the Inception Architecture", §7-§10.

§8: RMSProp with decay 0.9 and eps 1.0 (TensorFlow's: eps inside the square root, momentum 0.9,
accumulator starting at 1), lr 0.045 decayed x0.94 every 2 epochs, gradient clipping at global norm
2.0, evaluation on a running average of the parameters, 100 epochs; §7 label smoothing 0.1; §9 299x299
input. From TF-slim (the paper states none of these): the running average is TensorFlow's
`ExponentialMovingAverage(0.9999, global_step)` of the model variables (weights and BatchNorm
statistics; decay min(0.9999, (1 + n) / (10 + n)) after update n); weight decay 4e-5 on the conv and
fully connected weights only (inception_v3_arg_scope's weights_regularizer; biases and BatchNorm not
decayed); the auxiliary head on Mixed_6e with loss weight 0.4; inception_preprocessing's training
distortions (`augment='inception_tf'`: sample_distorted_bounding_box with area 5-100 % and aspect
3/4-4/3, flip, distort_color). Batch: the paper ran 50 asynchronous replicas of batch 32; we run
synchronously at batch 256 with the paper's lr (not rescaled).

Expected: 21.2 % / 5.6 % top-1/top-5 error, single crop (paper §11, on the non-blacklisted val set;
~0.2 points worse on all 50,000); torchvision's port: 77.3 % / 93.5 % accuracy.

  python train.py --config=configs/inception_v3.py --workdir=runs/inception_v3 --config.data.data_dir=DIR
  python train.py --config=configs/inception_v3.py:runlocal --workdir=/tmp/iv3_local   # CPU, < 3 min

Hardware/time: 27 M parameters (24 M without the aux head), 5.7 GMACs per image at 299: 100 epochs
are 128 M images, several days on 8 modern GPUs with bf16 (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'inception_v3'  # registered with the aux head on; it runs in train mode only
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'inception_tf'
  c.image_size = 299
  c.batch_size = 256
  c.num_epochs = 100.0
  c.label_smoothing = 0.1
  c.aux_loss_weight = 0.4
  c.ema_decay = 0.9999
  c.optimizer.name = 'rmsprop'
  c.optimizer.lr = 0.045
  c.optimizer.rmsprop_decay = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.momentum = 0.9
  c.optimizer.grad_clip_norm = 2.0
  c.optimizer.weight_decay = 4e-5
  c.optimizer.decay_mask = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.factor = 0.94
  c.schedule.decay_epochs = 2.0
  if args.runlocal:
    config_lib.apply_runlocal(c, 'inception_v3_tiny')
  return c
