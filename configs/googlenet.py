"""GoogLeNet (Inception v1): Szegedy et al. 2015 (CVPR), "Going Deeper with Convolutions".

§5-§6: two auxiliary classifiers (after 4a and 4d) whose losses are added with weight 0.3; SGD with
momentum 0.9, learning rate decreased by 4 % every 8 epochs; Polyak averaging for the final model
(here: TensorFlow's moving average of the weights and BatchNorm statistics, decay
min(0.9999, (1 + n) / (10 + n)) after update n, used for every evaluation); §6 augmentation
(`augment='googlenet'`): crops of 8-100 % of the image area with aspect ratio 3/4-4/3, flips, Howard's
photometric distortions (contrast, brightness, colour) and AlexNet's PCA lighting. The paper trained
asynchronously on CPUs (DistBelief) and gives neither the base rate, the batch nor the weight decay.
We take them from BVLC Caffe's public GoogLeNet solver (`models/bvlc_googlenet/solver.prototxt`: lr
0.01, x0.96 every 320 K iterations of batch 32 = 8 epochs, weight decay 2e-4, momentum 0.9; its
train_val.prototxt decays the weights only, `decay_mult: 0` on biases) and run it synchronously at
batch 256 with the same lr 0.01 (not scaled up x8: a choice, not the paper's) for 60 epochs (ours).
The network is torchvision's layout (`googlenet`, BatchNorm, no LRN); `googlenet_paper` is the
paper's layout.

Expected: paper Table 3, 1 model / 1 crop: 10.07 % top-5 error; torchvision's port of the TF
weights: 69.8 % / 89.5 % top-1/top-5 accuracy.

  python train.py --config=configs/googlenet.py --workdir=runs/googlenet --config.data.data_dir=DIR
  python train.py --config=configs/googlenet.py:runlocal --workdir=/tmp/googlenet_local  # CPU, < 3 min

Hardware/time: 6.6 M parameters (+6.4 M in the aux heads, training only), 1.5 GMACs per image: about
a day on one modern GPU for 60 epochs (not measured here).
"""

from cnn_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.model.name = 'googlenet'
  c.model.kwargs.aux_logits = True
  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.augment = 'googlenet'
  c.image_size = 224
  c.batch_size = 256
  c.num_epochs = 60.0
  c.aux_loss_weight = 0.3
  c.ema_decay = 0.9999
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 2e-4
  c.optimizer.decay_mask = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.factor = 0.96
  c.schedule.decay_epochs = 8.0
  if args.runlocal:
    config_lib.apply_runlocal(c, 'googlenet_tiny')
  return c
