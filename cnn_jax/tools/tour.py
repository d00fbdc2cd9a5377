"""`python -m cnn_jax.tools.tour <experiment> | --all [--smoke]`: the experiments of docs/tour.md.

Each experiment trains a few variants of a small network (cnn_jax/models/small.py) with the real
trainer (`cnn_jax.trainer.train_and_evaluate`) on an embedded dataset, over several seeds, and writes
a Markdown table and a PNG figure: training error against steps (mean over seeds, min-max shaded)
and the final test error of each seed. `--smoke` runs every variant for a few steps on digits (tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np
from absl import logging

from cnn_jax import config as config_lib
from cnn_jax import host_memory, trainer
from cnn_jax.models import registry, stats


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  model: str = 'tour_cnn'
  kwargs: tuple = ()          # (key, value) pairs for the model constructor
  overrides: tuple = ()       # (dotted config field, value) pairs, e.g. (('optimizer.lr', 0.1),)


@dataclasses.dataclass(frozen=True)
class Experiment:
  title: str
  claim: str
  variants: tuple[Variant, ...]
  steps: int = 300
  seeds: int = 2
  dataset: str = 'fashion_mnist'
  train_split: str = 'train'  # e.g. 'train[:1000]': a small training set that a CNN can memorise
  lr: float = 0.01
  target_error: float | None = None  # report the first step whose training error is below this
  overrides: tuple = ()  # (dotted config field, value) pairs for every variant, before its own
  input_scale: str = ''  # how the input is scaled, when not the model's registry convention


_FC = (('head', 'fc'),)
# AlexNet §2: "the (centered) raw RGB values": 0-255, the training set's mean pixel subtracted, no
# std division (the 'raw_centred' convention). Fashion-MNIST's mean pixel is 72.94 (the mean of its
# 60,000 training images), so the network sees x - 72.94 in [-73, 182].
_RAW_CENTRED = (('data.mean', (72.94 / 255,) * 3),
                ('data.std', registry.INPUT_CONVENTIONS['raw_centred'].std))
EXPERIMENTS = {
    'relu_tanh': Experiment(
        'ReLU against tanh',
        'AlexNet §3.1, Fig. 1: a 4-layer CNN reaches 25 % training error on CIFAR-10 6x faster with '
        'ReLU than with tanh.',
        (Variant('ReLU', kwargs=(('activation', 'relu'),)),
         Variant('tanh', kwargs=(('activation', 'tanh'),))),
        steps=300, seeds=3, target_error=0.25),
    'lrn_pooling': Experiment(
        'Local response normalisation and overlapping pooling',
        'AlexNet §3.3-3.4: LRN lowers top-1/top-5 error by 1.4 %/1.2 %; overlapping pooling (3/2 '
        'instead of 2/2) by 0.4 %/0.3 %.',
        (Variant('baseline (2/2 pool)'), Variant('+ LRN', kwargs=(('lrn', True),)),
         Variant('+ overlapping pool 3/2', kwargs=(('pool', 'overlap'),)),
         Variant('baseline, lr 1e-3', overrides=(('optimizer.lr', 1e-3),)),
         Variant('+ LRN, lr 1e-3', kwargs=(('lrn', True),), overrides=(('optimizer.lr', 1e-3),))),
        # The raw input is 58x (1 / (255 * 0.229)) the normalised one of the other experiments, so
        # their lr 0.01 becomes 0.01 / 58 ~ 1e-4; at 1e-2 nothing trained in a 60-step probe.
        lr=1e-4, overrides=_RAW_CENTRED, input_scale='centred raw pixels, 0-255 (AlexNet §2)'),
    'dropout': Experiment(
        'Dropout against over-fitting',
        'AlexNet §4.2: without dropout the network over-fits substantially; dropout 0.5 in the FC '
        'layers roughly doubles the iterations needed to converge.',
        (Variant('no dropout'), Variant('dropout 0.5', kwargs=(('dropout', 0.5),))),
        steps=600, train_split='train[:1000]'),
    'vgg_3x3': Experiment(
        'Two 3x3 convolutions against one 5x5',
        'VGG §2.3: a stack of 3x3 convs has the receptive field of a larger kernel with fewer '
        'parameters (2 x 9 C^2 against 25 C^2) and more non-linearity; VGG configs with 3x3 convs '
        'beat shallower ones (Table 3).',
        (Variant('one 5x5 per stage', kwargs=(('kernels', 'large'),)),
         Variant('two 3x3 per stage', kwargs=(('kernels', 'stacked'),)))),
    'gap_head': Experiment(
        '1x1 convolutions and global average pooling instead of FC layers',
        'NiN §3.2 and GoogLeNet §5: a 1x1 conv + global average pooling head needs far fewer '
        'parameters than FC layers; GoogLeNet reports +0.6 % top-1 for average pooling over FC.',
        (Variant('FC-256 head', kwargs=_FC), Variant('1x1 conv + GAP head', kwargs=(('head', 'gap'),)))),
    'batch_norm': Experiment(
        'Batch normalisation',
        'Ioffe & Szegedy 2015: BatchNorm trains faster and tolerates much higher learning rates.',
        (Variant('no BN, lr 0.01'), Variant('BN, lr 0.01', kwargs=(('batch_norm', True),)),
         Variant('no BN, lr 0.2', overrides=(('optimizer.lr', 0.2),)),
         Variant('BN, lr 0.2', kwargs=(('batch_norm', True),), overrides=(('optimizer.lr', 0.2),))),
    ),
    'residual': Experiment(
        'Residual connections against depth',
        'ResNet §4.1, Fig. 4, Table 2: plain-34 has higher training and validation error than '
        'plain-18 (28.54 % vs 27.94 % top-1); with shortcuts the deeper net is better (ResNet-34 '
        '25.03 % vs ResNet-18 27.88 %).',
        tuple(Variant(f'{kind}-{6 * n + 2}', model='tour_resnet',
                      kwargs=(('blocks_per_stage', n), ('residual', kind == 'residual'),
                              ('width', 8)))
              for kind in ('plain', 'residual') for n in (1, 4)),
        lr=0.05),
    'label_smoothing_aux': Experiment(
        'Label smoothing and an auxiliary classifier',
        'Inception-v3 §7: label smoothing with epsilon 0.1 gains about 0.2 % top-1 and top-5. '
        'GoogLeNet §5: auxiliary classifiers (loss weight 0.3) on intermediate layers help the '
        'gradient reach the lower layers.',
        (Variant('plain cross-entropy'),
         Variant('label smoothing 0.1', overrides=(('label_smoothing', 0.1),)),
         Variant('aux head, weight 0.3', kwargs=(('aux_head', True),),
                 overrides=(('aux_loss_weight', 0.3),)))),
}


def make_config(exp: Experiment, variant: Variant, seed: int, steps: int, dataset: str):
  """A full trainer config for one run: SGD momentum 0.9, constant lr, no checkpoints."""
  c = config_lib.base_config()
  c.model.name = variant.model
  for key, value in variant.kwargs:
    c.model.kwargs[key] = value
  c.data.name = dataset
  c.data.train_split = exp.train_split
  c.data.crop_fraction = 1.0
  c.image_size = 32 if dataset == 'digits' else 28
  c.batch_size = 64
  c.eval_batch_size = 500
  c.num_train_steps = steps
  c.optimizer.update(name='sgd', lr=exp.lr, momentum=0.9)
  c.schedule.name = 'constant'
  c.log_every_steps = max(1, steps // 25)
  c.eval_every_steps = steps
  c.checkpoint_every_steps = -1
  c.seed = seed
  for field, value in exp.overrides + variant.overrides:
    section, _, key = field.rpartition('.')
    (c[section] if section else c)[key] = value
  return c


def _read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  train = [(r['step'], r['top1_error']) for r in rows if r['split'] == 'train']
  evals = [r for r in rows if r['split'] == 'eval']
  return np.array(train).reshape(-1, 2), (evals[-1] if evals else {'top1_error': np.nan})


def run(name: str, out_dir: str, smoke: bool = False) -> list[dict]:
  """Run experiment `name`; write `tour_<name>.md` and `tour_<name>.png` to out_dir; return rows."""
  exp = EXPERIMENTS[name]
  steps, seeds = (4, 1) if smoke else (exp.steps, exp.seeds)
  dataset = 'digits' if smoke else exp.dataset
  rows = []
  for variant in exp.variants:
    params = stats.count_params(stats.abstract_model(variant.model, 10, **dict(variant.kwargs)))
    curves, test_errors, reach = [], [], []
    for seed in range(seeds):
      t0 = time.time()
      with tempfile.TemporaryDirectory() as workdir:
        try:
          trainer.train_and_evaluate(make_config(exp, variant, seed, steps, dataset), workdir)
        except trainer.NonFiniteLossError:  # a too-high learning rate: no final evaluation (NaN),
          pass                              # reported as diverged
        curve, final = _read_metrics(workdir)
      curves.append(curve)
      test_errors.append(final['top1_error'])
      if exp.target_error is not None:
        below = curve[curve[:, 1] <= exp.target_error]
        reach.append(below[0, 0] if len(below) else np.nan)
      print(f'  {name} | {variant.label} | seed {seed}: test error {final["top1_error"]:.4f} '
            f'({time.time() - t0:.0f} s)', flush=True)
    rows.append({'variant': variant.label, 'params': params, 'curves': curves,
                 'test_errors': test_errors, 'steps_to_target': reach,
                 'final_train_error': [c[-1, 1] if len(c) else np.nan for c in curves]})
  os.makedirs(out_dir, exist_ok=True)
  _write_table(name, exp, rows, steps, seeds, dataset, out_dir)
  _plot(name, exp, rows, out_dir)
  return rows


def _mean_spread(values):
  v = np.asarray(values, dtype=float)
  if np.isnan(v).any():
    return f'diverged ({int(np.isnan(v).sum())}/{len(v)} seeds)'
  return f'{100 * np.nanmean(v):.2f} ± {100 * np.nanstd(v):.2f}' if len(v) > 1 else f'{100 * v[0]:.2f}'


def _write_table(name, exp, rows, steps, seeds, dataset, out_dir):
  split = '' if exp.train_split == 'train' else f' {exp.train_split}'
  scale = f', input: {exp.input_scale}' if exp.input_scale else ''
  lines = [f'**{exp.title}** — {dataset}{split}{scale}, {steps} steps of batch 64, '
           f'{seeds} seed(s); errors in % (mean ± std over seeds).', '',
           '| variant | params | final train error | test error |'
           + (f' steps to {exp.target_error:.0%} train error |' if exp.target_error else ''),
           '| --- | ---: | ---: | ---: |' + (' ---: |' if exp.target_error else '')]
  for r in rows:
    line = (f'| {r["variant"]} | {r["params"]:,} | {_mean_spread(r["final_train_error"])} | '
            f'{_mean_spread(r["test_errors"])} |')
    if exp.target_error:
      reach = np.asarray(r['steps_to_target'], dtype=float)
      line += f' {np.nanmean(reach):.0f} |' if np.isfinite(reach).any() else ' not reached |'
    lines.append(line)
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(out_dir, f'tour_{name}.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)


def _plot(name, exp, rows, out_dir):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={'width_ratios': [2, 1]})
  for i, r in enumerate(rows):
    n = min(len(c) for c in r['curves'])  # a diverged seed stops early
    if n == 0:
      continue
    steps = r['curves'][0][:n, 0]
    errs = np.stack([c[:n, 1] for c in r['curves']])
    ax1.plot(steps, 100 * errs.mean(0), label=r['variant'], color=f'C{i}')
    ax1.fill_between(steps, 100 * errs.min(0), 100 * errs.max(0), color=f'C{i}', alpha=0.2)
    ax2.scatter([i] * len(r['test_errors']), 100 * np.asarray(r['test_errors']), color=f'C{i}')
    ax2.hlines(100 * np.mean(r['test_errors']), i - 0.3, i + 0.3, color=f'C{i}')
  if exp.target_error:
    ax1.axhline(100 * exp.target_error, color='grey', ls='--', lw=0.8)
  ax1.set(xlabel='training step', ylabel='training top-1 error (%)', title=exp.title)
  ax1.legend(fontsize=8)
  ax2.set(ylabel='test top-1 error (%)', xticks=range(len(rows)),
          title='final test error per seed')
  ax2.set_xticklabels([r['variant'] for r in rows], rotation=20, ha='right', fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, f'tour_{name}.png'), dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('experiments', nargs='*', choices=[[], *EXPERIMENTS], metavar='EXPERIMENT',
                      help='one or more of: ' + ', '.join(EXPERIMENTS))
  parser.add_argument('--all', action='store_true', help='run every experiment')
  parser.add_argument('--smoke', action='store_true', help='a few steps on digits (for tests)')
  parser.add_argument('--out', default='docs/figures', help='where tables and figures go')
  args = parser.parse_args(argv)
  names = list(EXPERIMENTS) if args.all else args.experiments
  if not names:
    parser.error('name an experiment or pass --all; experiments: ' + ', '.join(EXPERIMENTS))
  logging.set_verbosity(logging.WARNING)
  for name in names:
    print(f'== {name}: {EXPERIMENTS[name].claim}', flush=True)
    run(name, args.out, smoke=args.smoke)


if __name__ == '__main__':
  host_memory.keep_freed_memory()
  main()
