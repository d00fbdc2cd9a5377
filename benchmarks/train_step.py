"""Training-step speed: the trainer's own jitted step per model, fp32 and bf16, against PyTorch.

  python -m benchmarks.train_step    # the 8 models below, fp32 and bf16, batch 16 (~25 min on 2 cores)

For each model at its registry resolution (224; 227 for alexnet2012; 299 for Inception v3): compile
time, step time and images/s of `cnn_jax.trainer`'s train step (`trainer.train_step_fn`: SGD +
momentum + weight decay, synthetic data, one device: the first GPU, or the CPU), in float32 and in
bfloat16 compute; then the same for an eager PyTorch step of torchvision's model (alexnet2012: the
same layers in torch.nn, torchvision has none), channels-last, SGD, cross-entropy (plus 0.3 x the
auxiliary heads' loss where both have them), bf16 through autocast (AMP) on CPU or GPU; and the
ratio jax / torch images/s. Each step time is the median of `steps` timed steps after a warm-up,
jax's and torch's steps taken in turn (the same load on the machine for both); the last column is
the quartiles of the ratio round by round, the spread that noise on a shared machine gives the
ratio (on a 2-core VM a resnet18 step moves by 10-20% between runs: use --steps=15 or more).
Then the conv block of `benchmarks/conv_block.py` (GFLOP/s of XLA's convolution, the oneDNN kernel
and PyTorch's). Prints Markdown tables. The same command runs on a GPU machine.

On CPU glibc unmaps every large buffer when it is freed and the next step faults it in again; the
benchmark keeps freed memory as train.py does (`cnn_jax.host_memory`, for jax's and torch's steps
alike) and its header says which malloc ran.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import conv_block
from cnn_jax import config as config_lib
from cnn_jax import host_memory, kernels, models, parallel, trainer

MODELS = ['resnet18', 'resnet50', 'alexnet', 'alexnet2012', 'vgg16', 'googlenet', 'inception_v3',
          'mobilenet_v2']
_MODELS = flags.DEFINE_list('models', MODELS, 'Registry names to time.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 15, 'Timed steps (after one warm-up step).')
_PRECISIONS = flags.DEFINE_list('precisions', ['fp32', 'bf16'], 'fp32 and/or bf16 compute.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time PyTorch where importable.')
_CONV_BLOCK = flags.DEFINE_bool('conv_block', True, "Also time benchmarks/conv_block.py's block.")

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
AUX_LOSS_WEIGHT = 0.3


def paired_steps(*runs, steps: int) -> list[list[float]]:
  """Seconds of each call of each of `runs` (callables that block until done): one warm-up call
  each, then `steps` rounds that call each once in turn, so that every run sees the same machine
  (other load on shared cores moves both, not one)."""
  for run in runs:
    run()
  times = [[] for _ in runs]
  for _ in range(steps):
    for run, samples in zip(runs, times):
      t0 = time.perf_counter()
      run()
      samples.append(time.perf_counter() - t0)
  return times


def round_ratios(jax_s: list[float], torch_s: list[float]) -> tuple[float, float]:
  """The lower and upper quartile over rounds of torch's step time / jax's in the same round:
  how far the ratio of medians moves with the machine's noise."""
  ratios = [t / j for j, t in zip(jax_s, torch_s)]
  if len(ratios) < 2:
    return ratios[0], ratios[0]
  low, _, high = statistics.quantiles(ratios, n=4, method='inclusive')
  return low, high


def jax_step(name: str, size: int, batch: int, bf16: bool):
  """The trainer's compiled train step on one synthetic batch: (run, compile seconds, compiled),
  `run()` taking one step and blocking until it is done."""
  c = config_lib.base_config()
  c.model.name = name
  c.image_size = size
  c.batch_size = batch
  c.num_classes = 1000
  c.num_train_steps = 1000
  c.half_precision = bf16
  c.data.name = 'digits'  # sizes the epoch only: the step runs on random images
  c.optimizer.update(name='sgd', lr=0.1, momentum=0.9, weight_decay=1e-4, decay_mask='all')
  c.schedule.name = 'constant'
  if models.get_info(name).family in ('googlenet', 'inception'):
    c.aux_loss_weight = AUX_LOSS_WEIGHT
  step = trainer.train_step_fn(c)
  t0 = time.perf_counter()
  with jax.set_mesh(step.mesh):
    compiled = step.fn.lower(*step.args).compile()
  compile_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  data = parallel.global_batch({'image': rng.standard_normal((batch, size, size, 3), np.float32),
                                'label': rng.integers(0, 1000, batch).astype(np.int32),
                                'mask': np.ones(batch, bool)}, step.mesh)
  carry = [step.init(), step.new_acc()]

  def run():
    carry[:] = compiled(*carry, data)
    jax.block_until_ready(carry)

  return run, compile_s, compiled


def torch_alexnet2012(torch, num_classes: int = 1000):
  """Krizhevsky et al. 2012's network (cnn_jax's alexnet2012) in torch.nn: two towers as groups=2,
  LRN (torch divides alpha by size: 5e-4 / 5 = the paper's 1e-4) over all 96/256 channels."""
  nn = torch.nn
  lrn = lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
  return nn.Sequential(
      nn.Conv2d(3, 96, 11, 4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
      nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
      nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
      nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes))


def torch_step(name: str, size: int, batch: int, bf16: bool):
  """The same step in eager PyTorch as a callable that blocks until done, or None where torch or
  the model is unavailable."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if name == 'alexnet2012':
    model = torch_alexnet2012(torch)
  elif name in TORCHVISION:
    ctor, kwargs = TORCHVISION[name]
    model = getattr(torchvision.models, ctor)(num_classes=1000, **kwargs)
  else:
    return None
  model = model.to(device, memory_format=torch.channels_last).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  x = torch.randn(batch, 3, size, size, device=device).contiguous(
      memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (batch,), device=device)
  ce = lambda logits: torch.nn.functional.cross_entropy(logits.float(), y)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
      out = model(x)
      if hasattr(out, 'logits'):  # torchvision's Inception/GoogLeNet outputs in train mode
        aux = [a for k, a in out._asdict().items() if k.startswith('aux') and a is not None]
        loss = ce(out.logits) + AUX_LOSS_WEIGHT * sum(ce(a) for a in aux)
      else:
        loss = ce(out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  return step


def device_name() -> str:
  device = jax.devices()[0]
  if device.platform != 'cpu':
    return f'{device.device_kind} ({device.platform})'
  with open('/proc/cpuinfo', encoding='utf-8') as f:
    names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  return f'CPU: {names[0] if names else "unknown"}, {kernels.threads()} threads'


def main(argv):
  del argv
  batch, steps = _BATCH.value, _STEPS.value
  print(f'{device_name()}; jax {jax.__version__}; batch {batch}; median of {steps} timed steps; '
        f'oneDNN kernel: {kernels.unavailable_reason() or "built"}; '
        f'malloc: {host_memory.describe()}\n')
  print('| model | px | compute | compile s | step s | img/s | torch img/s | jax / torch | '
        'rounds p25-p75 |')
  print('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name in _MODELS.value:
    size = models.get_info(name).input_size
    for precision in _PRECISIONS.value:
      bf16 = precision == 'bf16'
      run, compile_s, _ = jax_step(name, size, batch, bf16)
      torch_run = torch_step(name, size, batch, bf16) if _TORCH.value else None
      runs = [run] if torch_run is None else [run, torch_run]
      jax_times, *torch_times = paired_steps(*runs, steps=steps)
      jax_s = statistics.median(jax_times)
      torch_cols = '- | - | -'
      if torch_times:
        torch_s = statistics.median(torch_times[0])
        low, high = round_ratios(jax_times, torch_times[0])
        torch_cols = f'{batch / torch_s:.1f} | {torch_s / jax_s:.2f} | {low:.2f}-{high:.2f}'
      print(f'| {name} | {size} | {precision} | {compile_s:.1f} | {jax_s:.3f} | '
            f'{batch / jax_s:.1f} | {torch_cols} |', flush=True)
  if _CONV_BLOCK.value:
    print('\nConv block (benchmarks/conv_block.py defaults: 4 x conv3x3, 16x56x56x64, forward + '
          'backward):\n')
    print('\n'.join(conv_block.table(16, 56, 64, 5, [
        {'fp32': 'float32', 'bf16': 'bfloat16'}[p] for p in _PRECISIONS.value])))


if __name__ == '__main__':
  host_memory.keep_freed_memory()
  jax.config.update('jax_cuda_visible_devices', '0')  # one device, as torch's step
  app.run(main)
