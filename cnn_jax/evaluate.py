"""Top-1 / top-5 error of trained or converted networks over a whole split: centre crop, 10-crop, ensembles.

Krizhevsky et al. 2012 report error rates over the whole ILSVRC-2012 validation set (§6). At test time
their network "extracts five 224x224 patches (the four corner patches and the center patch) as well as
their horizontal reflections (hence ten patches in all), and averag[es] the predictions made by the
network's softmax layer on the ten patches" (§4.1), and an ensemble of CNNs averages the predictions of
its members ("5 CNNs", §6 and Table 2). Here the predictions are averaged the same way: the softmax
over the views, then over the networks.

Every example is counted exactly once, whatever the batch size or process count: the loader pads the
last batch and masks the padding out (`cnn_jax.data.make_loader(train=False)`), and the masked top-k
counts and loss are the trainer's own (`metrics.accumulate`, which its training and validation use).

A network is named by a path and read by `cnn_jax.load` (a train.py workdir, one of its steps, or
converted weights). `evaluate(networks, ...)` evaluates restored networks; `run(...)` is eval.py: it resolves the paths,
checks model and dataset, evaluates, prints a results row and appends it to `results.jsonl`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from cnn_jax import data
from cnn_jax import load
from cnn_jax import metrics as metrics_lib
from cnn_jax import models
from cnn_jax import parallel
from cnn_jax.checkpoint import IncompatibleCheckpointError

RESULTS_FILE = 'results.jsonl'


# ----------------------------------------------------------------------------- evaluating


def _log_mean_exp(x: jax.Array) -> jax.Array:
  """log(mean(exp(x), axis 0)): log-probabilities of the averaged softmax."""
  return jax.nn.logsumexp(x, axis=0) - math.log(x.shape[0])


def _make_step(graphdefs, rests, ten_crop: bool):
  """The jitted body: add one masked batch into the sums, predictions averaged over views and nets."""

  def log_probs(graphdef, rest, w, images):
    model = nnx.merge(graphdef, w, rest, copy=True)
    forward = lambda x: jax.nn.log_softmax(model(x, train=False).astype(jnp.float32))
    if not ten_crop:
      return forward(images)
    # (B, 10, H, W, 3): one view at a time, so 10-crop needs no more memory than one crop.
    return _log_mean_exp(jax.lax.map(forward, jnp.moveaxis(images, 1, 0)))

  def step(ws, sums, batch):
    labels, mask = batch['label'], batch['mask']
    each = jnp.stack([log_probs(g, r, w, batch['image']) for g, r, w in zip(graphdefs, rests, ws)])
    new = metrics_lib.accumulate(sums, _log_mean_exp(each), labels, mask)
    if len(ws) > 1:
      c1, c5 = jax.vmap(lambda lp: metrics_lib.correct(lp, labels, mask))(each)
      new['member_top1'], new['member_top5'] = sums['member_top1'] + c1, sums['member_top5'] + c5
    return new

  return step


def _zeros(num_networks: int) -> dict[str, jax.Array]:
  """The trainer's accumulators (`metrics.zeros`), and each member's hits for an ensemble."""
  sums = metrics_lib.zeros()
  if num_networks > 1:
    sums['member_top1'] = sums['member_top5'] = jnp.zeros((num_networks,), jnp.float32)
  return sums


def _place(weights: nnx.State, mesh) -> nnx.State:
  """Host-local weights -> global arrays on `mesh` (replicated, or as the model annotates them),
  built from each process's own copy: no transfer between processes."""
  def put(x, sharding):
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, weights, parallel.state_shardings(weights, mesh))


def _uncommitted(rest: nnx.State) -> nnx.State:
  """Copies not tied to a device, so the compiled step may close over them on any mesh."""
  def copy(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(jnp.asarray(np.asarray(jax.random.key_data(x))),
                                      impl=jax.random.key_impl(x))
    return jnp.asarray(np.asarray(x))
  return jax.tree.map(copy, rest)


def _check_networks(networks: Sequence[load.Network], data_config, image_size: int) -> None:
  if len({n.source.num_classes for n in networks}) > 1:
    raise IncompatibleCheckpointError(
        'the networks of an ensemble must predict the same classes; got ' +
        ', '.join(f'{n.source.path}: {n.source.num_classes}' for n in networks))
  for n in networks:
    minimum = models.get_info(n.source.name).min_input_size
    if image_size < minimum:
      raise ValueError(f'{n.source.name} needs images of at least {minimum}x{minimum} pixels, not '
                       f'{image_size}; evaluate at a larger --config.image_size')
  infos = [models.get_info(n.source.name) for n in networks]
  preprocessing = {i.name: (tuple(i.mean), tuple(i.std), i.crop_fraction, i.eval_geometry)
                   for i in infos}
  overridden = all(data_config.get(k) for k in ('mean', 'std', 'crop_fraction'))
  if len(set(preprocessing.values())) > 1 and not (
      overridden and len({p[3] for p in preprocessing.values()}) == 1):
    raise ValueError('the networks of this ensemble prepare their input differently ((mean, std, '
                     f'crop_fraction, eval_geometry) {preprocessing}); set data.mean, data.std and '
                     'data.crop_fraction in the config to evaluate them on the same input, or '
                     'evaluate networks of different eval_geometry separately')


def evaluate(networks: Sequence[load.Network], data_config: ml_collections.ConfigDict, *, split: str,
             image_size: int, batch_size: int, ten_crop: bool = False, mesh=None,
             progress: bool = False) -> dict[str, Any]:
  """Top-1 / top-5 over the whole `split` at `image_size`; softmax averaged over views and networks.

  `batch_size` images per global batch (each of 10 views with `ten_crop`), a multiple of the mesh's
  'data' size. Returns every metric of `metrics.summarise`: top1, top5 (accuracies in [0, 1]),
  top1_err, top5_err, loss (the mean negative log-likelihood of the averaged softmax); n (examples
  counted), seconds and images_per_s
  (after compilation) and, for an ensemble, members: each network's own top1_err / top5_err.
  """
  _check_networks(networks, data_config, image_size)
  mesh = mesh if mesh is not None else parallel.make_mesh({'data': -1, 'model': 1})
  if batch_size % mesh.shape['data']:
    raise ValueError(f'the eval batch size {batch_size} must be a multiple of the '
                     f'{mesh.shape["data"]} devices of the mesh\'s data axis')
  total = data.num_examples(data_config, split)
  ws = [_place(n.weights, mesh) for n in networks]
  sharding = parallel.batch_sharding(mesh)
  views = (10,) if ten_crop else ()
  abstract_batch = {
      'image': jax.ShapeDtypeStruct((batch_size, *views, image_size, image_size, 3), jnp.float32,
                                    sharding=sharding),
      'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
      'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding)}
  replicated = parallel.replicated(mesh)
  body = _make_step([n.graphdef for n in networks], [_uncommitted(n.rest) for n in networks],
                    ten_crop)
  with jax.set_mesh(mesh):
    sums = jax.jit(functools.partial(_zeros, len(networks)), out_shardings=replicated)()
    step = jax.jit(body, out_shardings=replicated, donate_argnums=(1,)).lower(
        ws, sums, abstract_batch).compile()
  parallel.wait_for_all_processes('cnn_jax:eval_compiled')  # peers' compile times differ

  loader = data.make_loader(data_config, split, train=False, global_batch_size=batch_size, seed=0,
                            image_size=image_size, model_name=networks[0].source.name,
                            ten_crop=ten_crop)
  bar = tqdm(total=total, unit='img', unit_scale=True, dynamic_ncols=True,
             desc=f'{split} {"10-crop" if ten_crop else "centre crop"}',
             disable=not progress or jax.process_index() != 0)
  t0 = time.time()
  for batch in loader:
    sums = step(ws, sums, parallel.global_batch(batch, mesh))
    bar.update(min(batch_size, total - bar.n))
  sums = jax.device_get(sums)
  seconds = time.time() - t0
  bar.close()

  summary = metrics_lib.summarise(sums)
  n = int(sums['count'])
  # Every metric of `metrics.summarise` (top1_error is called top1_err in eval.py's rows).
  result = {**{k.replace('_error', '_err'): v for k, v in summary.items()}, 'n': n,
            'seconds': seconds, 'images_per_s': n / seconds}
  if len(networks) > 1:
    result['members'] = [
        {'checkpoint': net.source.path, 'top1_err': 1.0 - float(c1) / n,
         'top5_err': 1.0 - float(c5) / n}
        for net, c1, c5 in zip(networks, sums['member_top1'], sums['member_top5'])]
  return result


# ----------------------------------------------------------------------------- eval.py


def _data_config(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A run's data config from its config.json (JSON lists back to tuples)."""
  c = data.default_data_config()
  for key, value in saved.items():
    if key in c:
      c[key] = tuple(value) if isinstance(value, list) else value
  return c


def _settings(config, source: load.Source):
  """(data config, image size, eval batch size, mesh shape, half precision): from --config, else the
  run's config.json, else ImageNet's validation split at the model's registry input size."""
  if config is not None:
    return (config.data, config.image_size, config.eval_batch_size, config.mesh_shape,
            config.half_precision)
  run = source.run_config
  if run is not None:
    return (_data_config(run['data']), run['image_size'], run['eval_batch_size'], run['mesh_shape'],
            run.get('half_precision'))
  imagenet = data.default_data_config()
  imagenet.name, imagenet.eval_split = 'imagenet2012', 'validation'
  return imagenet, source.image_size, 256, {'data': -1, 'model': 1}, None


def format_row(row: dict[str, Any]) -> str:
  """One line for the console: model, data, protocol, errors, size, speed."""
  step = '' if row['step'] is None else f' @ step {row["step"]}'
  return (f'{row["model"]}{step} | {row["dataset"]}/{row["split"]} n={row["n"]} | {row["crop"]} '
          f'{row["resolution"]} px | top-1 err {100 * row["top1_err"]:.2f} % | top-5 err '
          f'{100 * row["top5_err"]:.2f} % | {row["param_count"] / 1e6:.2f} M params | '
          f'{row["images_per_s"]:.0f} img/s')


def run(config: ml_collections.ConfigDict | None = None, *, workdir: str | None = None,
        checkpoints: Sequence[str] = (), step: int | None = None, best: bool = False,
        ten_crop: bool = False, split: str | None = None, batch_size: int = 0,
        progress: bool = True) -> dict[str, Any]:
  """eval.py: evaluate, print a results row and append it to results.jsonl; return the row.

  The networks are `checkpoints` (several = an ensemble), else `workdir`'s `step`, `best` or latest
  checkpoint. Data, resolution, batch size and mesh come from `config`, else from the (first) run's
  config.json, else ImageNet's validation split. `split` and `batch_size` (> 0) override them.
  The row goes to `workdir`/results.jsonl, else to the run directory of the first checkpoint
  (converted weights alone without a workdir: printed only). Only process 0 prints and writes.
  """
  if not checkpoints and not workdir:
    raise ValueError('nothing to evaluate: pass --workdir (a train.py run) or --checkpoint')
  sources = ([load.locate(p, step=step, best=best) for p in checkpoints] if checkpoints
             else [load.locate_run(workdir, step, best)])
  if config is not None:
    for s in sources:
      if s.name != config.model.name:
        raise IncompatibleCheckpointError(
            f'{s.path} is a checkpoint of {s.name}, but the config evaluates '
            f'{config.model.name}; pass the config it was trained with (or omit --config to use '
            "the run's own config.json)")
  data_config, image_size, eval_batch, mesh_shape, half = _settings(config, sources[0])
  split = split or data_config.eval_split
  total = data.num_examples(data_config, split)  # a dataset that is not prepared fails here
  num_classes = data.num_classes(data_config)
  for s in sources:
    if s.num_classes != num_classes:
      raise IncompatibleCheckpointError(
          f'{s.path} predicts {s.num_classes} classes, but {data_config.name} has {num_classes}')

  if half is None:
    half = jax.default_backend() != 'cpu'
  networks = [load.restore(s, dtype=jnp.bfloat16 if half else None) for s in sources]
  sources = [n.source for n in networks]  # the step read, where the latest was damaged
  mesh = parallel.make_mesh(mesh_shape)
  result = evaluate(networks, data_config, split=split, image_size=image_size,
                    batch_size=batch_size or eval_batch, ten_crop=ten_crop, mesh=mesh,
                    progress=progress)
  if result['n'] != total:
    logging.warning('%d of the %d examples of %s were counted: the others were skipped as corrupt '
                    '(data.skip_corrupt)', result['n'], total, split)

  names = [s.name for s in sources]
  one = len(sources) == 1
  row = {
      'model': names[0] if one else (f'{names[0]} x{len(names)}' if len(set(names)) == 1
                                     else '+'.join(names)),
      **{k: result[k] for k in ('top1', 'top1_err', 'top5', 'top5_err', 'n')},
      'crop': '10-crop' if ten_crop else 'center', 'resolution': image_size,
      'param_count': sum(n.param_count for n in networks),
      'step': sources[0].step if one else [s.step for s in sources],
      'checkpoint': sources[0].path if one else [s.path for s in sources],
      'dataset': data_config.name, 'split': split, 'dtype': 'bfloat16' if half else 'float32',
      **{k: v for k, v in result.items() if k not in ('top1', 'top1_err', 'top5', 'top5_err', 'n')},
      'time': time.time()}
  out_dir = workdir or next((s.workdir for s in sources if s.workdir), None)
  if jax.process_index() == 0:
    print(format_row(row), flush=True)
    if out_dir:
      path = os.path.join(os.path.abspath(out_dir), RESULTS_FILE)
      with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(row) + '\n')
      logging.info('appended the results row to %s', path)
    else:
      logging.warning('no --workdir: the results row was printed, not saved')
  return row
