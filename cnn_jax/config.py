"""Config helpers shared by the recipes in configs/: the trainer's fields, `:arg` parsing, runlocal, checks.

A recipe is `get_config(arg=None)`: it starts from `base_config()` (every field the trainer reads, with
its meaning) and sets every number of its paper's recipe. `arg` is the text after the colon in
`--config=configs/resnet.py:depth=50,runlocal`.
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections

from cnn_jax import models
from cnn_jax.data.config import default_data_config
from cnn_jax.data.transforms import AUGMENTATIONS

OPTIMIZERS = ('sgd', 'rmsprop')
SCHEDULES = ('constant', 'step', 'plateau', 'exponential', 'linear', 'warmup_cosine')
DECAY_MASKS = ('all', 'kernels')

# Fields every recipe states (configs/resnet.py shows each).
REQUIRED = ('model.name', 'data.name', 'image_size', 'batch_size', 'optimizer.name', 'optimizer.lr',
            'optimizer.momentum', 'schedule.name')
# (field, value) -> fields that choice needs, and a recipe that makes it.
REQUIRED_IF = {
    ('optimizer.name', 'rmsprop'): (('optimizer.rmsprop_decay', 'optimizer.eps'),
                                    'inception_v3.py'),
    ('schedule.name', 'step'): (('schedule.factor', 'schedule.boundaries_epochs'), 'resnet.py'),
    ('schedule.name', 'exponential'): (('schedule.factor', 'schedule.decay_epochs'),
                                       'inception_v3.py'),
    ('schedule.name', 'plateau'): (('schedule.factor', 'schedule.patience',
                                    'schedule.max_reductions'), 'vgg.py'),
}


def _unset(field_type: type) -> ml_collections.FieldReference:
  """A required field: None until a recipe sets it (typed, so --config.x=... parses)."""
  return ml_collections.FieldReference(None, field_type=field_type)


def base_config() -> ml_collections.ConfigDict:
  """Every field `trainer.train_and_evaluate` reads; no default here is a paper's number.

  Three kinds of field; `validate` rejects an unset one of the first two, naming it and the fix:
  - required, unset ('' or None): model.name, data.name, image_size, batch_size, num_epochs
    (unless num_train_steps > 0), optimizer.name / lr / momentum, schedule.name.
  - required when chosen: optimizer.decay_mask when weight_decay > 0; REQUIRED_IF: rmsprop_decay
    and eps for 'rmsprop', the chosen schedule's factor, boundaries_epochs, decay_epochs, patience
    and max_reductions.
  - defaults that switch something off (weight_decay, weight_decay_until_epoch, grad_clip_norm,
    warmup_epochs, label_smoothing, aux_loss_weight, ema_decay = 0; nesterov False; augment
    'none') or control the run (eval_batch_size, one micro-batch, evaluation and checkpoint each
    epoch, logging, seed); the plateau rule's rtol and cooldown are optax's defaults.

  model.name / model.kwargs: registry name and constructor overrides (`cnn_jax.models.create`).
  data: `cnn_jax.data.config.default_data_config()` with `name` unset.
  image_size: train crop and eval size in pixels. num_classes: None = from the dataset.
  batch_size / eval_batch_size: global (all devices, all processes).
  num_epochs / num_train_steps: training length; num_train_steps > 0 wins.
  optimizer: name 'sgd' (PyTorch-style momentum: v = m v + g, w -= lr v) or 'rmsprop' (TF's:
    v = m v + lr g / sqrt(ms + eps), w -= v); momentum 0 = none; weight_decay is coupled L2 (added to
    the gradient before momentum) on the parameters chosen by decay_mask: 'all' or 'kernels'
    (conv/dense weights, not biases or BN), switched off from weight_decay_until_epoch (0 = never);
    grad_clip_norm: clip the gradient (L2 term included) by global norm (0 = off).
  schedule: name in SCHEDULES. 'step': lr x factor at each of boundaries_epochs. 'plateau': lr x factor
    when the validation top-1 error has not improved (rtol) for `patience` evaluations, at most
    max_reductions times (optax.contrib.reduce_on_plateau). 'exponential': lr x factor every
    decay_epochs (staircase). 'linear': from lr to 0 over the run (Caffe's "poly", power 1).
    'warmup_cosine': linear warmup over warmup_epochs, then cosine to 0.
  label_smoothing: epsilon of Szegedy et al. 2016 §7. aux_loss_weight: weight of auxiliary heads' loss.
  ema_decay: TensorFlow's ExponentialMovingAverage of the weights and BatchNorm statistics, decay
    min(ema_decay, (1 + n) / (10 + n)) after update n; evaluated instead of them (0 = off).
  grad_accum_steps: split each batch into this many micro-batches (less memory) and average their
    gradients. The update equals one big batch's only for models without BatchNorm and with dropout
    off: BatchNorm normalises each micro-batch with its own statistics (like a smaller batch, and its
    running statistics take one step per micro-batch), and dropout draws other masks.
  mesh_shape: devices per mesh axis, -1 = the rest. half_precision: bfloat16 compute, float32
    parameters, optimizer state and loss; None = on for GPU/TPU, off on CPU.
  log_every_steps; eval_every_steps (0 = once per epoch, < 0 = never); checkpoint_every_steps (0 = at
  each eval, < 0 = never);
  keep_checkpoints: the latest N are kept, plus the one with the best validation top-1.
  init_weights: a weights directory written by `python -m cnn_jax.convert` (e.g. torchvision's), or
    a train.py workdir or one of its checkpoints/<step> directories, to start a new run from
    (fine-tuning; a run's moving average where it keeps one); weights of another shape (the
    classifier, for another class count) keep their fresh initialisation. Ignored when the workdir
    already holds a checkpoint.
  """
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({'name': '', 'kwargs': ml_collections.ConfigDict()})
  c.data = default_data_config()
  c.data.name = ''
  c.image_size = _unset(int)
  c.num_classes = ml_collections.FieldReference(None, field_type=int)
  c.batch_size = _unset(int)
  c.eval_batch_size = 256
  c.num_epochs = _unset(float)
  c.num_train_steps = -1

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = ''
  c.optimizer.lr = _unset(float)
  c.optimizer.momentum = _unset(float)
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 0.0
  c.optimizer.decay_mask = ''
  c.optimizer.weight_decay_until_epoch = 0.0
  c.optimizer.rmsprop_decay = _unset(float)
  c.optimizer.eps = _unset(float)
  c.optimizer.grad_clip_norm = 0.0

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = ''
  c.schedule.factor = _unset(float)
  c.schedule.boundaries_epochs = _unset(tuple)
  c.schedule.patience = _unset(int)
  c.schedule.rtol = 1e-4
  c.schedule.cooldown = 0
  c.schedule.max_reductions = _unset(int)
  c.schedule.decay_epochs = _unset(float)
  c.schedule.warmup_epochs = 0.0

  c.label_smoothing = 0.0
  c.aux_loss_weight = 0.0
  c.ema_decay = 0.0
  c.grad_accum_steps = 1
  c.mesh_shape = ml_collections.ConfigDict({'data': -1, 'model': 1})
  c.half_precision = ml_collections.FieldReference(None, field_type=bool)

  c.log_every_steps = 100
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 0
  c.keep_checkpoints = 3
  c.init_weights = ''
  c.seed = 0
  return c


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'depth=50,runlocal' -> {'depth': 50, 'runlocal': True, **other defaults}.

  Values are Python literals where they parse as one (50, 0.1, True), else strings (and always for a
  key whose default is a string). Only keys in
  `defaults` are accepted, so a typo fails with the list of valid ones.
  """
  out = ml_collections.ConfigDict({'runlocal': False, **defaults})
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if key not in out:
      raise ValueError(f'unknown config argument {key!r} in {arg!r}; valid: {sorted(out.keys())}')
    if not sep:
      out[key] = True
      continue
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    if isinstance(out[key], str) and not isinstance(parsed, str):
      parsed = value  # version=1_1 is text, not the int literal 11
    if out[key] is not None and type(parsed) is not type(out[key]):  # pylint: disable=unidiomatic-typecheck
      raise ValueError(f'config argument {key}={value!r}: expected a {type(out[key]).__name__}')
    out[key] = parsed
  return out


def apply_runlocal(c: ml_collections.ConfigDict, model_name: str, image_size: int | None = None,
                   num_train_steps: int = 6) -> ml_collections.ConfigDict:
  """Shrink a recipe to a few steps of `model_name` (a tiny variant) on the embedded digits data.

  Keeps the recipe's optimizer, schedule type, loss, EMA and model options (`model.kwargs`, e.g. aux
  heads) so that those code paths run. `image_size` defaults to the tiny model's registry size.
  """
  c.model.name = model_name
  c.data = default_data_config()
  c.image_size = image_size or models.get_info(model_name).input_size
  c.num_classes = None
  c.batch_size = 16
  c.eval_batch_size = 128
  c.num_train_steps = num_train_steps
  if c.schedule.boundaries_epochs is not None:
    c.schedule.boundaries_epochs = tuple(float(i + 1)
                                         for i in range(len(c.schedule.boundaries_epochs)))
  c.schedule.warmup_epochs = min(c.schedule.warmup_epochs, 0.1)
  if c.schedule.decay_epochs is not None:
    c.schedule.decay_epochs = min(c.schedule.decay_epochs, 0.1)
  c.grad_accum_steps = 1
  c.log_every_steps = 2
  c.eval_every_steps = num_train_steps
  c.checkpoint_every_steps = num_train_steps
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Fail before anything is compiled when a field is unknown, unset, mistyped or inconsistent."""
  _check_keys(config, base_config(), '')
  _check_required(config)
  info = models.get_info(config.model.name)
  if config.image_size < info.min_input_size:
    raise ValueError(
        f'image_size={config.image_size} is too small for {config.model.name}, which needs at least '
        f'{info.min_input_size}x{info.min_input_size} pixels; set --config.image_size >= '
        f'{info.min_input_size} (its default is {info.input_size})')
  _check_choice('optimizer.name', config.optimizer.name, OPTIMIZERS)
  _check_choice('schedule.name', config.schedule.name, SCHEDULES)
  _check_choice('data.augment', config.data.augment, AUGMENTATIONS)
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('set num_epochs > 0 or num_train_steps > 0')
  if config.optimizer.weight_decay or config.optimizer.decay_mask:
    _check_choice('optimizer.decay_mask', config.optimizer.decay_mask, DECAY_MASKS)
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] < 1:
      raise ValueError(f'{key}={config[key]}: set --config.{key} to a positive number (the global '
                       'batch, over all devices)')
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise ValueError(f'batch_size={config.batch_size} must be a multiple of grad_accum_steps='
                     f'{config.grad_accum_steps}')
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f'ema_decay={config.ema_decay} must be in [0, 1) (0 = off)')


def _get(config, path: str) -> Any:
  for key in path.split('.'):
    config = config[key]
  return config


def _check_required(config) -> None:
  """Every field a recipe must state is set: REQUIRED, num_epochs (unless num_train_steps > 0), the
  decay mask when weight decay is on, and the fields REQUIRED_IF the chosen optimizer and schedule."""
  needed = {field: ('a recipe must state it', 'resnet.py') for field in REQUIRED}
  if config.num_train_steps <= 0:
    needed['num_epochs'] = ('a recipe must state it (or num_train_steps > 0)', 'resnet.py')
  if config.optimizer.weight_decay:
    needed['optimizer.decay_mask'] = (f'weight_decay > 0 needs it, one of {DECAY_MASKS}',
                                      'resnet.py')
  for (field, value), (fields, example) in REQUIRED_IF.items():
    if _get(config, field) == value:
      needed.update(dict.fromkeys(fields, (f'{field}={value!r} needs it', example)))
  for field, (why, example) in needed.items():
    if _get(config, field) in (None, ''):
      raise ValueError(f'config.{field} is not set: {why}; set --config.{field} (see '
                       f'configs/{example})')


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not one of {choices}; set --config.{name} to one of them')


def _check_keys(config, reference, prefix: str) -> None:
  """Every key of `config` must exist in `reference` with a compatible type (model.kwargs is free)."""
  for key, value in config.items():
    path = f'{prefix}{key}'
    if path == 'model.kwargs':
      continue
    if key not in reference:
      raise ValueError(f'unknown config key {path!r}; valid keys here: {sorted(reference.keys())}')
    ref = reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise TypeError(f'config key {path!r} must be a ConfigDict, got {value!r}')
      _check_keys(value, ref, path + '.')
    elif value is not None and ref is not None and not _compatible(value, ref):
      raise TypeError(f'config key {path!r} = {value!r} should be a {type(ref).__name__}')


def _compatible(value, ref) -> bool:
  if isinstance(ref, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(ref, bool)
  if isinstance(ref, float):
    return isinstance(value, (int, float))
  if isinstance(ref, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(ref))
