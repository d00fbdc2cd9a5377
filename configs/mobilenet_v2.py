"""MobileNetV2: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks".

torchvision's recipe for its IMAGENET1K_V1 weights (pytorch/vision
references/classification/README.md): SGD momentum 0.9, batch 256 (8 GPUs x 32), 300 epochs, lr 0.045
x0.98 every epoch, weight decay 4e-5 on all parameters (its train.py default), random-resized crops
(`augment='inception'`). The paper (§6.1) used RMSProp (decay and momentum 0.9), lr 0.045 x0.98 per
epoch, weight decay 4e-5, batch 96 on 16 GPUs.

Expected: 71.9 % / 90.3 % top-1/top-5 (torchvision IMAGENET1K_V1); paper Table 4: 72.0 % top-1.

  python train.py --config=configs/mobilenet_v2.py --workdir=runs/mobilenet_v2 --config.data.data_dir=DIR
  python train.py --config=configs/mobilenet_v2.py:runlocal --workdir=/tmp/mobilenet_local  # CPU

Hardware/time: 3.5 M parameters, 0.30 GMACs per image; 300 epochs are input-pipeline bound, several
days on one modern GPU (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'mobilenet_v2'
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'inception'
  c.image_size = 224
  c.batch_size = 256
  c.num_epochs = 300.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.045
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 4e-5
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'exponential'
  c.schedule.factor = 0.98
  c.schedule.decay_epochs = 1.0
  if args.runlocal:
    config_lib.apply_runlocal(c, 'mobilenet_v2_tiny')
  return c
