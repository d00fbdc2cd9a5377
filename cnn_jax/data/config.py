"""The data section of a recipe: `config.data = default_data_config(); config.data.name = ...`."""

from __future__ import annotations

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults for `cnn_jax.data.make_loader`; every field is documented here.

  name: 'digits' (scikit-learn's 8x8 digits, embedded), 'fashion_mnist' (IDX files of Debian's
    `dataset-fashion-mnist`, or `data_dir`), 'folder' (`data_dir/<class>/<image>`, classes sorted),
    'imagenet2012' or any other TFDS name prepared as array_record under `data_dir`.
  data_dir: the TFDS data_dir, the image-folder root, or the Fashion-MNIST IDX folder (None = default).
  train_split / eval_split: split names (TFDS slicing such as 'train[:90%]' works for TFDS datasets;
    'folder' reads `data_dir/<split>/<class>/<image>`).
  augment: the train augmentation: a name in `transforms.AUGMENTATION_RECIPES`, the table that
    defines each with its paper ('alexnet', 'inception', ...), or 'none' (the eval transform);
    `config.validate` rejects other names. The eval geometry is the model's (registry
    eval_geometry): 'torchvision' (Resize + CenterCrop in whole pixels: torchvision's pixels) or
    'exact' (the papers' exact sub-pixel centre crop).
  train_antialias: how train transforms resample their crop: False = OpenCV's plain bilinear on the
    box rounded to whole pixels, as TensorFlow's and DALI's ImageNet pipelines (fast); True = PIL's
    antialiased bilinear on the exact box, as torchvision's. Eval always uses the latter.
  crop_fraction: eval crop / resize (0.875 = 224/256); None takes the model's registry value.
  num_workers: grain worker processes for reading and decoding (0 = in the main process).
  read_threads: batches made ahead in parallel threads by this process (or by each worker);
    simplejpeg, PIL and OpenCV release the GIL while they decode and resize.
  prefetch: batches each worker keeps ready for the main process.
  skip_corrupt: False = an image that fails to decode raises an error naming the record; True = it is
    skipped, logged and counted: replaced by a random other record in training, masked out in eval.
  mean / std: per-channel normalisation on the [0, 1] scale; None takes the model's registry values
    (ImageNet's when no model is named).
  """
  c = ml_collections.ConfigDict()
  c.name = 'digits'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.train_split = 'train'
  c.eval_split = 'test'
  c.augment = 'none'
  c.train_antialias = False
  c.crop_fraction = ml_collections.FieldReference(None, field_type=float)
  c.num_workers = 0
  c.read_threads = 2
  c.prefetch = 2
  c.skip_corrupt = False
  c.mean = ml_collections.FieldReference(None, field_type=tuple)
  c.std = ml_collections.FieldReference(None, field_type=tuple)
  return c
