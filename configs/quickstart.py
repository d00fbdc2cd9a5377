"""Quick start: a small ResNet (He et al. 2016) on scikit-learn's digits, on a CPU.

`resnet_tiny` is the zoo's ResNet-18 layout (basic blocks, BatchNorm, 7x7/2 stem + max-pool) with one
block per stage and 8-64 channels instead of 64-512. The digits (1,797 8x8 grey images, embedded in
scikit-learn; cnn_jax.data keeps the last 20 % as the test set) are upsampled to 32x32 RGB. SGD with
momentum 0.9, weight decay 5e-4, lr 0.1 with 1 epoch of warmup then cosine decay, batch 64, 15 epochs.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart   (or: make quickstart)

Expected: 93.6 % test top-1 at seed 0 (94.7 / 95.0 % at seeds 1 / 2; 100 % train, so the small
test split of other writers is the limit), in under a minute on 2 CPU cores (Intel Xeon) including
compilation; nothing is downloaded.
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'resnet_tiny'
  c.data.name = 'digits'
  c.data.crop_fraction = 1.0  # the whole digit: its strokes reach the border of the 8x8 image
  c.image_size = 32
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 15.0
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_mask = 'all'
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_epochs = 1.0
  c.log_every_steps = 10
  c.keep_checkpoints = 2
  if args.runlocal:
    config_lib.apply_runlocal(c, 'resnet_tiny', 32)
  return c
