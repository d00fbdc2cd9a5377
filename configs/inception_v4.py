"""Inception-v4: Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning" (arXiv 1602.07261).

§4 (Training methodology): RMSProp with decay 0.9 and epsilon 1.0, lr 0.045 decayed by 0.94 every two
epochs, evaluation on a running average of the parameters, 20 replicas on Kepler GPUs. The paper
gives no batch size or epoch count; we take Inception-v3's (batch 32 x 50 replicas ~ 1600 there; 256
here, 100 epochs) and label smoothing 0.1. From TF-slim: RMSProp momentum 0.9; weight decay 4e-5 on
the conv and fully connected weights only (inception_v4_arg_scope; biases and BatchNorm not decayed);
TensorFlow's `ExponentialMovingAverage(0.9999, global_step)` of the weights and BatchNorm statistics
(decay min(0.9999, (1 + n) / (10 + n)) after update n); inception_preprocessing's training distortions
(`augment='inception_tf'`: sample_distorted_bounding_box with area 5-100 % and aspect 3/4-4/3, flip,
distort_color). 299 px; dropout keep 0.8 is in the model.

Expected: 80.2 % / 95.2 % top-1/top-5 (TF-slim's released checkpoint, single 299 crop).

  python train.py --config=configs/inception_v4.py --workdir=runs/inception_v4 --config.data.data_dir=DIR
  python train.py --config=configs/inception_v4.py:runlocal --workdir=/tmp/inception_v4_local  # CPU

Hardware/time: 42.7 M parameters, 12.3 GMACs per image at 299 px: about a week on one modern GPU for
100 epochs (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'inception_v4'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'inception_tf'
  c.image_size = 299
  c.batch_size = 256
  c.num_epochs = 100.0
  c.label_smoothing = 0.1
  c.ema_decay = 0.9999
  c.optimizer.name = 'rmsprop'
  c.optimizer.lr = 0.045
  c.optimizer.rmsprop_decay = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 4e-5
  c.optimizer.decay_mask = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.factor = 0.94
  c.schedule.decay_epochs = 2.0
  if args.runlocal:
    config_lib.apply_runlocal(c, 'inception_v4_tiny')
  return c
