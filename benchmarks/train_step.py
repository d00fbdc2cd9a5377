"""Training-step speed: the trainer's own jitted step per model, fp32 and bf16, against torchvision.

  python -m benchmarks.train_step --models=resnet18,alexnet --batch=32 --steps=5

For each model at its registry resolution (224; 227 for alexnet2012; 299 for Inception v3) and batch
32: compile time, step time and images/s of `cnn_jax.trainer`'s train step (SGD + momentum + weight
decay, synthetic data, one device), in float32 and in bfloat16 compute. Where torch and torchvision
are importable and torchvision has the model, the same for an eager PyTorch step (SGD, CE loss; bf16
through CPU/GPU autocast) and the ratio jax/torch images/s. Prints a Markdown table.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from cnn_jax import config as config_lib
from cnn_jax import metrics as metrics_lib
from cnn_jax import models, optim, parallel, trainer

_MODELS = flags.DEFINE_list('models', ['resnet18', 'alexnet'], 'Registry names to time.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps (after one warm-up step).')
_PRECISIONS = flags.DEFINE_list('precisions', ['fp32', 'bf16'], 'fp32 and/or bf16 compute.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time torchvision where importable.')

# cnn_jax name -> (torchvision constructor name, kwargs)
TORCHVISION = {
    'alexnet': ('alexnet', {}), 'vgg11': ('vgg11', {}), 'vgg16': ('vgg16', {}),
    'vgg19': ('vgg19', {}), 'vgg16_bn': ('vgg16_bn', {}), 'resnet18': ('resnet18', {}),
    'resnet34': ('resnet34', {}), 'resnet50': ('resnet50', {}), 'resnet101': ('resnet101', {}),
    'resnet152': ('resnet152', {}), 'googlenet': ('googlenet', {'aux_logits': False,
                                                                'init_weights': True}),
    'inception_v3': ('inception_v3', {'aux_logits': True, 'init_weights': True}),
    'squeezenet1_0': ('squeezenet1_0', {}), 'squeezenet1_1': ('squeezenet1_1', {}),
    'mobilenet_v2': ('mobilenet_v2', {}), 'densenet121': ('densenet121', {}),
}


def time_jax(name: str, size: int, batch: int, steps: int, bf16: bool) -> dict[str, float]:
  """Compile and run the trainer's train step; returns compile_s, step_s, images_per_s."""
  c = config_lib.base_config()
  c.model.name = name
  c.image_size = size
  c.batch_size = batch
  c.num_classes = 1000
  c.half_precision = bf16
  c.optimizer.weight_decay = 1e-4
  if name.startswith('inception') or name.startswith('googlenet'):
    c.aux_loss_weight = 0.3
  mesh = parallel.make_mesh({'data': 1, 'model': 1}, devices=jax.devices()[:1])
  tx = optim.make_optimizer(c, steps_per_epoch=1000, total_steps=100_000)
  init = functools.partial(trainer._init_state, c, 1000, tx, None)  # pylint: disable=protected-access
  abstract = jax.eval_shape(init)
  shardings = parallel.state_shardings(abstract, mesh)
  graphdef, _, rng_state, _ = trainer._split(  # pylint: disable=protected-access
      nnx.eval_shape(lambda: trainer._build_model(c, 1000)))  # pylint: disable=protected-access
  rng_state = trainer._placeholder_rngs(rng_state)  # pylint: disable=protected-access
  state = jax.jit(init, out_shardings=shardings)()
  acc_sharding = jax.tree.map(lambda _: parallel.replicated(mesh), metrics_lib.zeros())
  acc = jax.device_put(metrics_lib.zeros(), acc_sharding)
  rng = np.random.default_rng(0)
  batch_np = {'image': rng.standard_normal((batch, size, size, 3), np.float32),
              'label': rng.integers(0, 1000, batch).astype(np.int32),
              'mask': np.ones(batch, bool)}
  data = parallel.global_batch(batch_np, mesh)
  t0 = time.perf_counter()
  step = jax.jit(
      functools.partial(trainer._train_step, graphdef=graphdef,  # pylint: disable=protected-access
                        rng_state=rng_state, config=c, tx=tx),
      in_shardings=(shardings, acc_sharding, parallel.batch_sharding(mesh)),
      out_shardings=(shardings, acc_sharding), donate_argnums=(0, 1),
  ).lower(state, acc, data).compile()
  compile_s = time.perf_counter() - t0
  state, acc = step(state, acc, data)
  jax.block_until_ready(acc)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, acc = step(state, acc, data)
  jax.block_until_ready(acc)
  step_s = (time.perf_counter() - t0) / steps
  return {'compile_s': compile_s, 'step_s': step_s, 'images_per_s': batch / step_s}


def time_torch(name: str, size: int, batch: int, steps: int, bf16: bool) -> dict[str, float] | None:
  """The same step in eager PyTorch (torchvision's model), or None where unavailable."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if name not in TORCHVISION:
    return None
  ctor, kwargs = TORCHVISION[name]
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = getattr(torchvision.models, ctor)(num_classes=1000, **kwargs).to(device).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  x = torch.randn(batch, 3, size, size, device=device)
  y = torch.randint(0, 1000, (batch,), device=device)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
      out = model(x)
      logits = out.logits if hasattr(out, 'logits') else out
      loss = torch.nn.functional.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  step()
  if device == 'cuda':
    torch.cuda.synchronize()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  step_s = (time.perf_counter() - t0) / steps
  return {'step_s': step_s, 'images_per_s': batch / step_s}


def main(argv):
  del argv
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), batch {_BATCH.value}, '
        f'{_STEPS.value} timed steps')
  print('| model | px | compute | compile s | step s | img/s | torch img/s | jax/torch |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for name in _MODELS.value:
    size = models.get_info(name).input_size
    for precision in _PRECISIONS.value:
      bf16 = precision == 'bf16'
      r = time_jax(name, size, _BATCH.value, _STEPS.value, bf16)
      t = time_torch(name, size, _BATCH.value, _STEPS.value, bf16) if _TORCH.value else None
      torch_cols = (f"{t['images_per_s']:.1f} | {r['images_per_s'] / t['images_per_s']:.2f}"
                    if t else '- | -')
      print(f"| {name} | {size} | {precision} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
            f"{r['images_per_s']:.1f} | {torch_cols} |", flush=True)


if __name__ == '__main__':
  app.run(main)
