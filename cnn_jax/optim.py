"""Optimizers and learning-rate schedules of the papers, built from optax.

- SGD with momentum and coupled L2 weight decay, as Krizhevsky et al. 2012 §5, Simonyan & Zisserman
  2015 §3.1 and He et al. 2016 §3.4 apply it: the decay term is added to the gradient before the
  momentum (`add_decayed_weights` before `sgd`). The learning rate multiplies the momentum buffer
  (PyTorch's form); with a constant rate this equals the paper's `v <- 0.9 v - wd lr w - lr g`.
- RMSProp as Szegedy et al. 2016 §8 in TensorFlow's form (`tf.train.RMSPropOptimizer`): mean square
  `ms <- rho ms + (1 - rho) g^2` starting at 1, `mom <- momentum mom + lr g / sqrt(ms + eps)`,
  `w -= mom` (the learning rate inside the momentum buffer, eps inside the root); decay 0.9,
  momentum 0.9, eps 1.0. Gradient clipping by global norm (§8: threshold 2.0) applies to the
  gradient of the whole loss, the L2 term included, as TF-slim adds weight decay to the loss.
- Weight decay only on the parameters the recipe's source decayed (`decay_mask`), optionally switched
  off from an epoch on (`weight_decay_until_epoch`, BN-NiN's regime).
- Schedules: constant, step, exponential (x0.94 every 2 epochs), linear to 0, warmup + cosine, and
  "divide by 10 when the validation error plateaus" via `optax.contrib.reduce_on_plateau` fed once
  per evaluation.
- The moving average of the weights that GoogLeNet (§6, Polyak averaging) and Inception v3 (§8)
  evaluate: TensorFlow's `ExponentialMovingAverage(decay, num_updates)` (`ema_update`).

The learning rate is an injected hyperparameter (`optax.inject_hyperparams`): it is in the optimizer
state, so it is logged, checkpointed, and set by the plateau rule between steps.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax


def decay_mask(rule: str) -> Callable[[Any], Any] | None:
  """Which parameters weight decay applies to: 'all', or 'kernels' (rank >= 2: conv and dense weights,
  not biases or BatchNorm scale/offset, as cuda-convnet's per-layer `wc` did for AlexNet)."""
  if rule == 'all':
    return None
  if rule == 'kernels':
    return lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  raise ValueError(f"decay_mask={rule!r}: use 'all' or 'kernels'")


def make_schedule(cfg: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule | float:
  """The learning rate as a function of the optimizer step (plateau: the constant base rate)."""
  name = cfg.name
  if name in ('constant', 'plateau'):
    return base_lr
  if name == 'step':
    bounds = {round(e * steps_per_epoch): cfg.factor for e in cfg.boundaries_epochs}
    return optax.piecewise_constant_schedule(base_lr, bounds)
  if name == 'exponential':
    return optax.exponential_decay(base_lr, max(1, round(cfg.decay_epochs * steps_per_epoch)),
                                   cfg.factor, staircase=True)
  if name == 'linear':  # Caffe's "poly" policy with power 1
    return optax.linear_schedule(base_lr, 0.0, max(total_steps, 1))
  if name == 'warmup_cosine':
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup, max(total_steps, warmup + 1))
  raise ValueError(f'unknown schedule {name!r}')


def _transform(learning_rate, *, cfg: ml_collections.ConfigDict,
               weight_decay: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  parts = []
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay, decay_mask(cfg.decay_mask)))
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == 'sgd':
    parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == 'rmsprop':  # optax applies the rate before the momentum, as TF does
    parts.append(optax.rmsprop(learning_rate, decay=cfg.rmsprop_decay, eps=cfg.eps,
                               initial_scale=1.0, momentum=cfg.momentum or None,
                               nesterov=cfg.nesterov))
  else:
    raise ValueError(f"optimizer.name={cfg.name!r}: use 'sgd' or 'rmsprop'")
  return optax.chain(*parts)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   total_steps: int) -> optax.GradientTransformation:
  """The recipe's optimizer with its schedule injected as the `learning_rate` hyperparameter."""
  schedule = make_schedule(config.schedule, config.optimizer.lr, steps_per_epoch, total_steps)
  opt = config.optimizer
  weight_decay = opt.weight_decay
  if opt.weight_decay_until_epoch > 0:  # e.g. BN-NiN: decay off from epoch 20
    weight_decay = optax.piecewise_constant_schedule(
        opt.weight_decay, {round(opt.weight_decay_until_epoch * steps_per_epoch): 0.0})
  factory = functools.partial(_transform, cfg=opt, weight_decay=weight_decay)
  return optax.inject_hyperparams(factory)(learning_rate=schedule)


def make_plateau(cfg: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs | None:
  """The plateau rule, updated with the validation top-1 error after each evaluation (or None)."""
  if cfg.name != 'plateau':
    return None
  return optax.contrib.reduce_on_plateau(
      factor=cfg.factor, patience=cfg.patience, rtol=cfg.rtol, cooldown=cfg.cooldown,
      min_scale=cfg.factor ** cfg.max_reductions)


def learning_rate(opt_state) -> jax.Array:
  """The learning rate the last update used (from the injected hyperparameters)."""
  return opt_state.hyperparams['learning_rate']


def set_learning_rate(opt_state, value) -> Any:
  """A copy of `opt_state` whose next updates use `value` (for the plateau rule)."""
  hyper = dict(opt_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(value, hyper['learning_rate'].dtype)
  return opt_state._replace(hyperparams=hyper)


def ema_decay(decay: float, num_updates) -> jax.Array:
  """TensorFlow's `ExponentialMovingAverage` decay after `num_updates` optimizer updates:
  min(decay, (1 + n) / (10 + n)), so the average forgets the initial weights within the first steps."""
  n = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(average: Any, value: Any, decay: float, num_updates) -> Any:
  """`average` moved towards `value`: `average <- d average + (1 - d) value`, d = ema_decay(...).

  Called after the `num_updates`-th optimizer update with the new weights, as TensorFlow's
  `ExponentialMovingAverage.apply` runs after the train op that increments the global step.
  """
  return optax.incremental_update(value, average, 1.0 - ema_decay(decay, num_updates))
