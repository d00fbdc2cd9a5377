"""The training loop: `train_and_evaluate(config, workdir)`, all of it in this file.

- A ('data', 'model') mesh from `config.mesh_shape`; each host batch becomes a global array sharded
  over 'data' (`jax.make_array_from_process_local_data`); parameters are replicated. One `jax.jit`
  train step with donated state runs the same on 1 CPU, N devices or GPUs; BatchNorm statistics are
  therefore computed over the global batch (synchronised BN).
- Flax NNX in functional form: the model is split once into (graphdef, params, RNG streams, other
  state such as BatchNorm statistics) and merged inside the step. The dropout key of step s is
  fold_in(key(seed), s), so the run is a pure function of the seed and the data order.
- The train state is a dict {step, params, model_state, opt_state, rng[, ema][, plateau]}; it and
  the grain iterator position are checkpointed (cnn_jax/checkpoint.py). `ema` = {params, model_state}:
  TensorFlow's moving average (`optim.ema_update`) of what TF-slim's train_image_classifier averages,
  its model variables (the weights and the BatchNorm moving statistics); validation, the best
  checkpoint and eval.py use it. Running again on the same
  workdir resumes, bitwise identical on CPU to a run that was never interrupted.
- Metrics accumulate on device and are fetched every `log_every_steps`; validation (top-1/top-5 over
  the whole split, padding masked out) every `eval_every_steps`; a NaN/inf loss stops the run before
  the next checkpoint is written.

The step API, public for tools, benchmarks and forks (in the spirit of the flax ImageNet example):
`build_model` / `split_model`, `create_train_state` / `train_state`, `loss_fn`, `train_step`,
`eval_step` (pure functions), `make_plan` (validated config -> mesh, optimizer, abstract state, shardings) and
`train_step_fn` (the jitted step of a config with its abstract arguments, to lower, export or time).
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from cnn_jax import checkpoint as ckpt_lib
from cnn_jax import config as config_lib
from cnn_jax import data
from cnn_jax import load
from cnn_jax import metrics as metrics_lib
from cnn_jax import models
from cnn_jax import optim
from cnn_jax import parallel
from cnn_jax.convert import weights as weights_lib


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or inf."""


def split_model(model: nnx.Module):
  """(graphdef, params, RNG streams, model state: BatchNorm statistics ...); the train state holds
  params and model state, `nnx.merge(graphdef, params, rng_state, model_state)` rebuilds the model."""
  return nnx.split(model, nnx.Param, nnx.RngState, ...)


def _placeholder_rngs(abstract_rng_state):
  """Concrete values for the model's RNG streams. The train step reseeds the 'dropout' stream with
  fold_in(key(seed), step) and nothing else draws random numbers after init, so they are constants."""
  def fill(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      bits = jax.eval_shape(jax.random.key_data, x)
      return jax.random.wrap_key_data(jnp.zeros(bits.shape, bits.dtype), dtype=x.dtype)
    return jnp.zeros(x.shape, x.dtype)
  return jax.tree.map(fill, abstract_rng_state)


def _half_precision(config) -> bool:
  if config.half_precision is None:
    return jax.default_backend() != 'cpu'
  return config.half_precision


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
  """The model with its parameters initialised from `config.seed`.

  Initialisation draws with the 'rbg' generator: XLA compiles it several times faster than
  threefry on CPU (the init of ResNet-18 compiles in a third of the time); training randomness
  (dropout) uses the default generator.
  """
  kwargs = config.model.kwargs.to_dict()
  if _half_precision(config):
    kwargs['dtype'] = jnp.bfloat16
  rngs = nnx.Rngs(params=jax.random.key(config.seed, impl='rbg'), dropout=config.seed + 1)
  return models.create(config.model.name, num_classes, rngs=rngs, **kwargs)


def create_train_state(config, num_classes, tx, plateau=None):
  """The initial train state of a freshly initialised model (`train_state`); call it under jit (or
  eval_shape) to place it on a mesh."""
  _, params, _, model_state = split_model(build_model(config, num_classes))
  return train_state(config, params, model_state, tx, plateau)


def train_state(config, params, model_state, tx, plateau=None):
  """The train state {step, params, model_state, opt_state, rng[, ema][, plateau]} at step 0 of a
  model's `params` and `model_state` (`split_model`), for the optimizer `tx`
  (`optim.make_optimizer`)."""
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'model_state': model_state,
           'opt_state': tx.init(params),
           'rng': jax.random.key_data(jax.random.key(config.seed))}
  if config.ema_decay:  # TF's shadow variables start at the initial values
    state['ema'] = jax.tree.map(jnp.copy, {'params': params, 'model_state': model_state})
  if plateau is not None:
    state['plateau'] = plateau.init(params)
  return state


def _with_pretrained_weights(state, shardings, graphdef, rng_state, directory):
  """`state` whose params and BatchNorm statistics (and EMA) are those saved in `directory` (by
  cnn_jax.convert, or a train.py run's checkpoint), where the shapes agree; the others (a classifier
  for another class count) keep their initialisation. Every process reads the file; the result is
  placed on the state's shardings."""
  host = multihost_utils.process_allgather(
      {'params': state['params'], 'model_state': state['model_state']}, tiled=True)
  model = nnx.merge(graphdef, host['params'], rng_state, host['model_state'])
  network = load.restore(load.locate(directory))  # converted weights, or a train.py run
  reinitialised = weights_lib.copy_into(model, network.weights, f'the weights in {directory}',
                                        keep_mismatched=True)
  logging.info('initial weights from %s%s', directory,
               f'; kept fresh (other shape): {", ".join(reinitialised)}' if reinitialised else '')
  _, params, _, model_state = split_model(model)
  loaded = {'params': params, 'model_state': model_state}
  if 'ema' in state:
    loaded['ema'] = {'params': params, 'model_state': model_state}
  placed = jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: np.asarray(x)[index]),
      loaded, {k: shardings[k] for k in loaded})
  return {**state, **placed}


def loss_fn(graphdef, rng_state, config, params, model_state, batch, key):
  """The training loss of one (micro-)batch, its mean over the examples: cross-entropy with
  `config.label_smoothing`, plus `config.aux_loss_weight` times each auxiliary head's; with the new
  model state (BatchNorm statistics) and the main logits. `key` seeds dropout."""
  model = nnx.merge(graphdef, params, rng_state, model_state, copy=True)
  nnx.reseed(model, dropout=key)
  out = model(batch['image'], train=True)
  logits, aux = out if isinstance(out, tuple) else (out, ())
  loss = jnp.mean(metrics_lib.cross_entropy(logits, batch['label'], config.label_smoothing))
  for aux_logits in aux:
    loss += config.aux_loss_weight * jnp.mean(
        metrics_lib.cross_entropy(aux_logits, batch['label'], config.label_smoothing))
  return loss, (split_model(model)[3], logits)


def train_step(state, acc, batch, *, graphdef, rng_state, config, tx):
  """One optimizer update over the global batch (in `grad_accum_steps` micro-batches); its loss and
  hits are added into `acc` (`metrics.accumulate`). Pure: jit it with `graphdef`, `rng_state`,
  `config` and `tx` bound (`train_step_fn` does, with the shardings)."""
  step = state['step']
  key = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), step)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, graphdef, rng_state, config), has_aux=True)
  add = lambda acc, loss, logits, mb: metrics_lib.accumulate(
      acc, logits, mb['label'], mb['mask'], loss * jnp.sum(mb['mask'].astype(jnp.float32)))
  k = config.grad_accum_steps
  if k == 1:
    (loss, (model_state, logits)), grads = grad_fn(state['params'], state['model_state'], batch, key)
    sums = add(acc, loss, logits, batch)
  else:
    # (B, ...) -> (k, B/k, ...) taking every k-th example, so each micro-batch stays evenly
    # sharded over 'data' (no cross-device shuffle).
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1),
                         batch)

    def body(carry, xs):
      model_state, grads, sums = carry
      mb, i = xs
      (loss, (model_state, logits)), g = grad_fn(state['params'], model_state, mb,
                                                 jax.random.fold_in(key, i))
      grads = jax.tree.map(lambda a, b: a + b / k, grads, g)
      return (model_state, grads, add(sums, loss, logits, mb)), None

    init = (state['model_state'], jax.tree.map(jnp.zeros_like, state['params']), acc)
    (model_state, grads, sums), _ = jax.lax.scan(body, init, (micro, jnp.arange(k)))

  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new = {**state, 'step': step + 1, 'params': params, 'model_state': model_state,
         'opt_state': opt_state}
  if 'ema' in state:
    new['ema'] = optim.ema_update(state['ema'], {'params': params, 'model_state': model_state},
                                  config.ema_decay, step + 1)
  bad = jnp.logical_not(jnp.isfinite(sums['loss']) & jnp.isfinite(optax.global_norm(updates)))
  sums['nonfinite_step'] = jnp.where((acc['nonfinite_step'] < 0) & bad, step,
                                     acc['nonfinite_step'])
  return new, sums


def eval_step(state, sums, batch, *, graphdef, rng_state):
  """Add one padded eval batch into `sums` (eval mode; the moving average when there is one)."""
  weights = state.get('ema', state)
  model = nnx.merge(graphdef, weights['params'], rng_state, weights['model_state'], copy=True)
  return metrics_lib.accumulate(sums, model(batch['image'], train=False), batch['label'],
                                batch['mask'])


def _apply_plateau(state, error, *, plateau, base_lr):
  """Feed the validation error to the plateau rule and set the next learning rate from it."""
  _, pstate = plateau.update({}, state['plateau'], value=error)
  opt_state = optim.set_learning_rate(state['opt_state'], base_lr * pstate.scale)
  return {**state, 'plateau': pstate, 'opt_state': opt_state}


def _abstract_batch(config, batch_size, mesh):
  sharding = parallel.batch_sharding(mesh)
  s = config.image_size
  return {'image': jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.float32, sharding=sharding),
          'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
          'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding)}


def _check_sizes(config, mesh):
  n = mesh.shape['data']
  if config.batch_size % (n * config.grad_accum_steps):
    raise ValueError(f'batch_size={config.batch_size} must be a multiple of the data-parallel size '
                     f'{n} x grad_accum_steps {config.grad_accum_steps}')
  if config.eval_batch_size % n:
    raise ValueError(f'eval_batch_size={config.eval_batch_size} must be a multiple of the '
                     f'data-parallel size {n}')


class Plan(NamedTuple):
  """What a run is made of, derived from its config before anything is compiled."""

  mesh: jax.sharding.Mesh
  num_classes: int
  steps_per_epoch: int
  total_steps: int
  tx: optax.GradientTransformation
  plateau: Any  # optax.contrib.reduce_on_plateau, or None
  init: Any  # () -> the initial train state
  abstract_state: Any
  shardings: Any
  graphdef: nnx.GraphDef
  rng_state: Any


def make_plan(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Plan:
  """Validate `config` and trace one train and one eval step abstractly: a bad key, batch or image
  size, or a recipe whose loss, optimizer or model do not fit together fails here, before compiling.
  `mesh`: default `config.mesh_shape` over all devices."""
  config_lib.validate(config)
  mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh_shape)
  _check_sizes(config, mesh)
  num_classes = config.num_classes or data.num_classes(config.data)
  data.check_splits(config.data, [config.data.train_split] + (
      [config.data.eval_split] if config.eval_every_steps >= 0 else []), num_classes)
  steps_per_epoch = max(1, data.num_examples(config.data, config.data.train_split)
                        // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else math.ceil(config.num_epochs * steps_per_epoch))
  tx = optim.make_optimizer(config, steps_per_epoch, total_steps)
  plateau = optim.make_plateau(config.schedule)
  init = functools.partial(create_train_state, config, num_classes, tx, plateau)
  abstract_state = jax.eval_shape(init)
  shardings = parallel.state_shardings(abstract_state, mesh)
  graphdef, _, rng_state, _ = split_model(
      nnx.eval_shape(lambda: build_model(config, num_classes)))
  rng_state = _placeholder_rngs(rng_state)
  # Models are traced under the mesh: they may pin activations to its axes (AlexNet's towers).
  smallest_batch = mesh.shape['data'] * config.grad_accum_steps
  with jax.set_mesh(mesh):
    jax.eval_shape(functools.partial(train_step, graphdef=graphdef, rng_state=rng_state,
                                     config=config, tx=tx),
                   abstract_state, metrics_lib.zeros(),
                   _abstract_batch(config, smallest_batch, mesh))
    jax.eval_shape(functools.partial(eval_step, graphdef=graphdef, rng_state=rng_state),
                   abstract_state, metrics_lib.zeros(),
                   _abstract_batch(config, mesh.shape['data'], mesh))
  return Plan(mesh, num_classes, steps_per_epoch, total_steps, tx, plateau, init, abstract_state,
               shardings, graphdef, rng_state)


def _jit_train_step(config, plan: Plan):
  """The jitted train step, (state, acc, batch) -> (state, acc) donating state and acc, and
  abstract (state, acc, batch) with their shardings; both trace under `jax.set_mesh(plan.mesh)`."""
  acc_sharding = jax.tree.map(lambda _: parallel.replicated(plan.mesh), metrics_lib.zeros())
  step = jax.jit(
      functools.partial(train_step, graphdef=plan.graphdef, rng_state=plan.rng_state,
                        config=config, tx=plan.tx),
      in_shardings=(plan.shardings, acc_sharding, parallel.batch_sharding(plan.mesh)),
      out_shardings=(plan.shardings, acc_sharding), donate_argnums=(0, 1))
  acc = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     jax.eval_shape(metrics_lib.zeros), acc_sharding)
  args = (ckpt_lib.abstract(plan.abstract_state, plan.shardings), acc,
          _abstract_batch(config, config.batch_size, plan.mesh))
  return step, args


class TrainStep(NamedTuple):
  """The trainer's jitted train step for a config (`train_step_fn`)."""

  fn: Any  # jax.jit of (state, acc, batch) -> (state, acc); donates state and acc
  args: tuple  # abstract (state, acc, batch): ShapeDtypeStructs with their shardings
  mesh: jax.sharding.Mesh  # lower or export `fn` under `jax.set_mesh(mesh)`
  init: Any  # () -> the initial train state, on the mesh
  new_acc: Any  # () -> empty train accumulators, on the mesh


def train_step_fn(config: ml_collections.ConfigDict,
                  mesh: jax.sharding.Mesh | None = None) -> TrainStep:
  """The train step `train_and_evaluate` runs for `config` (after its checks, see `make_plan`), to
  lower, export (`jax.export.export(fn, platforms=[...])(*args)`) or time outside a run; `mesh`:
  default `config.mesh_shape` over all devices."""
  plan = make_plan(config, mesh)
  fn, args = _jit_train_step(config, plan)
  return TrainStep(fn, args, plan.mesh, jax.jit(plan.init, out_shardings=plan.shardings),
                   jax.jit(metrics_lib.zeros, out_shardings=jax.tree.map(
                       lambda x: x.sharding, args[1])))


def check(config: ml_collections.ConfigDict) -> None:
  """Everything `train_and_evaluate` checks before compiling (see `make_plan`), without training."""
  make_plan(config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Train `config` in `workdir` (resuming from its latest checkpoint); return the final eval metrics."""
  plan = make_plan(config)
  (mesh, num_classes, steps_per_epoch, total_steps, tx, plateau, init, abstract_state, shardings,
   graphdef, rng_state) = plan
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  name = config.model.name
  eval_every = config.eval_every_steps or steps_per_epoch  # < 0: never
  ckpt_every = config.checkpoint_every_steps or eval_every  # < 0: never

  logging.info('%s: %d classes, %d px, batch %d on mesh %s; %d steps (%d per epoch)', name,
               num_classes, config.image_size, config.batch_size, dict(mesh.shape), total_steps,
               steps_per_epoch)

  train_iter = data.make_loader(
      config.data, config.data.train_split, train=True, global_batch_size=config.batch_size,
      seed=config.seed, image_size=config.image_size, model_name=name)
  checkpointer = ckpt_lib.Checkpointer(
      workdir, keep=config.keep_checkpoints,
      identity={'model': name, 'num_classes': num_classes, 'image_size': config.image_size,
                **ckpt_lib.state_fields(config)})
  resumed = checkpointer.restore_latest(ckpt_lib.abstract(abstract_state, shardings), train_iter)
  if resumed is None:
    step = 0
    state = jax.jit(init, out_shardings=shardings)()
    if config.init_weights:
      state = _with_pretrained_weights(state, shardings, graphdef, rng_state, config.init_weights)
  else:
    step, state = resumed
    logging.info('resumed from %s at step %d', checkpointer.directory, step)
  if is_main:  # after the checkpoint was found to fit: a refused resume leaves config.json alone
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  writer = metrics_lib.Writer(workdir, enabled=is_main, start_step=step)

  acc_sharding = jax.tree.map(lambda _: parallel.replicated(mesh), metrics_lib.zeros())
  new_acc = jax.jit(metrics_lib.zeros, out_shardings=acc_sharding)
  t0 = time.time()
  with jax.set_mesh(mesh):
    step_fn, train_args = _jit_train_step(config, plan)
    compiled_train = step_fn.lower(*train_args).compile()
    compiled_eval = jax.jit(
        functools.partial(eval_step, graphdef=graphdef, rng_state=rng_state),
        in_shardings=(shardings, acc_sharding, parallel.batch_sharding(mesh)),
        out_shardings=acc_sharding, donate_argnums=(1,),
    ).lower(state, new_acc(), _abstract_batch(config, config.eval_batch_size, mesh)).compile()
  logging.info('compiled train and eval steps in %.1f s', time.time() - t0)
  parallel.wait_for_all_processes('cnn_jax:compiled')
  apply_plateau = None
  if plateau is not None:
    apply_plateau = jax.jit(
        functools.partial(_apply_plateau, plateau=plateau, base_lr=config.optimizer.lr),
        out_shardings=shardings, donate_argnums=(0,))

  def evaluate():
    sums = new_acc()
    for batch in data.make_loader(
        config.data, config.data.eval_split, train=False,
        global_batch_size=config.eval_batch_size, seed=config.seed,
        image_size=config.image_size, model_name=name):
      sums = compiled_eval(state, sums, parallel.global_batch(batch, mesh))
    return metrics_lib.summarise(jax.device_get(sums))

  def check_finite(acc):
    bad = int(jax.device_get(acc['nonfinite_step']))
    if bad >= 0:
      checkpointer.wait()
      raise NonFiniteLossError(
          f'the training loss or update became NaN or inf at step {bad + 1}; training stopped '
          f'before saving it. The last good checkpoint is step {checkpointer.latest_step()} in '
          f'{checkpointer.directory}. Lower the learning rate or check the data.')

  acc = new_acc()
  eval_metrics: dict[str, float] = {}
  t_last, step_last = time.time(), step
  try:
    while step < total_steps:
      batch = parallel.global_batch(next(train_iter), mesh)
      state, acc = compiled_train(state, acc, batch)
      step += 1
      checkpointer.check()  # a failed asynchronous save stops the run here
      done = step == total_steps
      if step % config.log_every_steps == 0 or done:
        sums = jax.device_get(acc)
        check_finite(acc)
        now = time.time()
        step_time = (now - t_last) / max(step - step_last, 1)
        lr = float(jax.device_get(optim.learning_rate(state['opt_state'])))
        writer.write(step, 'train', {
            **metrics_lib.summarise(sums), 'epoch': step / steps_per_epoch, 'lr': lr,
            'images_per_s': config.batch_size / step_time, 'step_time_s': step_time,
            'eta_s': step_time * (total_steps - step)})
        acc = new_acc()
        t_last, step_last = time.time(), step
      evaluated = eval_every > 0 and (step % eval_every == 0 or done)
      if evaluated:
        check_finite(acc)
        eval_metrics = evaluate()
        if apply_plateau is not None:
          state = apply_plateau(state, eval_metrics['top1_error'])
          eval_metrics['lr_next'] = float(jax.device_get(
              optim.learning_rate(state['opt_state'])))
        writer.write(step, 'eval', {**eval_metrics, 'epoch': step / steps_per_epoch})
      if ckpt_every > 0 and (step % ckpt_every == 0 or done):
        check_finite(acc)
        checkpointer.save(step, state, train_iter, eval_metrics if evaluated else None)
    if not eval_metrics and eval_every > 0:  # resumed at the end: evaluate what was restored
      eval_metrics = evaluate()
      writer.write(step, 'eval', eval_metrics)
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return eval_metrics
