"""Quick start: ResNet-18 (He et al. 2016, torchvision layout) on scikit-learn's digits, on a CPU.

The digits (1,797 8x8 grey images, embedded in scikit-learn; cnn_jax.data splits off the last 20 % as
the test set) are upsampled to 32x32 RGB. SGD with momentum 0.9, weight decay 5e-4, lr 0.1 with
warmup and cosine decay, batch 64, 10 epochs.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart   (or: make quickstart)

Expected: >= 95 % test top-1 (about 98 %), in under 3 minutes on 2 CPU cores, nothing downloaded.
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'resnet18'
  c.data.name = 'digits'
  c.image_size = 32
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 10.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_epochs = 1.0
  c.log_every_steps = 10
  c.eval_every_steps = 0  # every epoch
  c.keep_checkpoints = 2
  if args.runlocal:
    config_lib.apply_runlocal(c, 'resnet_tiny', 32)
  return c
