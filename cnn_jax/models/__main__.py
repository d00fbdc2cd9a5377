"""`python -m cnn_jax.models [--tiny] [name ...]`: a table of the zoo with computed params and
GMACs, each model's input convention and eval crop geometry."""

from __future__ import annotations

import argparse

from cnn_jax.models import get_info, list_models, registry, stats


def _fmt(value, spec):
  return '—' if value is None else format(value, spec)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('names', nargs='*', help='models to list (default: all)')
  parser.add_argument('--tiny', action='store_true', help='also list the tiny test variants')
  args = parser.parse_args(argv)
  names = args.names or list_models(include_tiny=args.tiny)
  header = (f'{"model":<22} {"params":>13} {"GMACs":>8} {"input":>5} {"convention":<14} '
            f'{"geometry":<11} {"top-1":>7} {"top-5":>7}  source')
  print(header)
  print('-' * len(header))
  for name in names:
    row, info = stats.model_stats(name), get_info(name)
    print(f'{name:<22} {row["params"]:>13,} {row["gmacs"]:>8.3f} {row["input_size"]:>5} '
          f'{info.input_convention:<14} {info.eval_geometry:<11} {_fmt(row["top1"], ".2f"):>7} '
          f'{_fmt(row["top5"], ".2f"):>7}  {row["source"]}', flush=True)
  print('\nGMACs: multiply-accumulates of conv and matmul at the default input size, counted from '
        'the jaxpr\n(torchvision `_ops` convention). Accuracy: published ImageNet-1k val %, not '
        'ours.\nInput conventions (the loader feeds (x/255 - mean) / std, x the RGB pixel in 0-255):')
  for key, convention in registry.INPUT_CONVENTIONS.items():
    print(f'  {key:<14} {convention.description}')
  print("Eval geometry: 'torchvision' = Resize + CenterCrop on whole pixels as torchvision's eval "
        "transform;\n'exact' = the centre crop at its exact sub-pixel position (the papers' "
        'protocol).')


if __name__ == '__main__':
  main()
