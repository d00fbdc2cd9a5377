"""`python -m cnn_jax.tools.filters --workdir DIR`: a checkpoint's first-layer kernels as a grid.

Krizhevsky et al. 2012, Figure 3: the 96 conv1 kernels of 11x11x3, "the top 48 kernels were
learned on GPU 1 while the bottom 48 kernels were learned on GPU 2" (§6.1). In the 2012 network
(`alexnet2012`) conv1's first half of output channels feeds only the first tower's grouped conv2,
so the grid draws the towers' halves as separate blocks; other networks are one block.

Each kernel is drawn as an RGB tile (its input channels are the image's R, G, B), scaled up with
nearest-neighbour pixels. Values map linearly to 0..255 over the min..max of all kernels (or of
each kernel with `--normalize per_kernel`). The PNG's size follows from the grid exactly:
width = cols * (k * scale + gap) + gap, height = rows * (k * scale + gap) + gap + tower gaps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from flax import nnx

from cnn_jax import load
from cnn_jax.tools import common

GAP = 2  # pixels between kernels
TOWER_GAP = 12  # pixels between the towers' blocks
BACKGROUND = 255  # white


def first_layer_kernel(model: nnx.Module, layer: str | None = None) -> tuple[str, np.ndarray]:
  """(path, kernel (kh, kw, 3, out)) of the conv that reads the image, or of `layer` ('a/b/0')."""
  convs = {'/'.join(map(str, path)): node for path, node in nnx.iter_graph(model)
           if isinstance(node, nnx.Conv)}
  if layer is not None:
    if layer not in convs:
      raise ValueError(f'no conv layer {layer!r} in {model.name}; its convs are: '
                       f'{", ".join(convs)}')
    chosen = [layer]
  else:
    chosen = [p for p, conv in convs.items() if conv.in_features == 3]
    if len(chosen) != 1:
      raise ValueError(f'{model.name} has {len(chosen)} convs reading 3 channels '
                       f'({", ".join(chosen)}); choose one with --layer')
  return chosen[0], np.asarray(convs[chosen[0]].kernel.get_value(), np.float32)


def kernel_grid(kernel: np.ndarray, *, towers: int = 1, cols: int = 16, scale: int = 4,
                normalize: str = 'global') -> np.ndarray:
  """uint8 RGB image (H, W, 3) of the kernels (kh, kw, cin, out), tower blocks one below another."""
  kh, kw, cin, out = kernel.shape
  if out % towers:
    raise ValueError(f'{out} kernels do not split into {towers} towers')
  if cin not in (1, 3):
    raise ValueError(f'kernels with {cin} input channels cannot be drawn as colours; '
                     'choose a layer that reads the image (1 or 3 channels)')
  k = np.moveaxis(kernel, -1, 0)  # (out, kh, kw, cin)
  if normalize == 'global':
    lo, hi = k.min(), k.max()
  elif normalize == 'per_kernel':
    lo, hi = k.min(axis=(1, 2, 3), keepdims=True), k.max(axis=(1, 2, 3), keepdims=True)
  else:
    raise ValueError(f"normalize must be 'global' or 'per_kernel', not {normalize!r}")
  k = np.round(255 * (k - lo) / np.maximum(hi - lo, 1e-12)).astype(np.uint8)
  k = np.repeat(np.repeat(k, scale, axis=1), scale, axis=2)
  if cin == 1:
    k = np.repeat(k, 3, axis=-1)
  per_tower = out // towers
  cols = min(cols, per_tower)
  rows = math.ceil(per_tower / cols)
  th, tw = kh * scale, kw * scale
  block_h = rows * (th + GAP)
  height = towers * block_h + GAP + (towers - 1) * TOWER_GAP
  grid = np.full((height, cols * (tw + GAP) + GAP, 3), BACKGROUND, np.uint8)
  for i in range(out):
    t, j = divmod(i, per_tower)
    r, c = divmod(j, cols)
    y = GAP + t * (block_h + TOWER_GAP) + r * (th + GAP)
    x = GAP + c * (tw + GAP)
    grid[y:y + th, x:x + tw] = k[i]
  return grid


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True,
                      help='a train.py workdir, or a weights directory from cnn_jax.convert')
  parser.add_argument('--step', type=int, help='checkpoint step (default: the latest)')
  parser.add_argument('--output', help='PNG path (default: WORKDIR/filters.png)')
  parser.add_argument('--layer', help="conv path, e.g. 'conv1' (default: the one reading the image)")
  parser.add_argument('--towers', type=int,
                      help="blocks to split the kernels into (default: the model's towers, 2 for "
                           'alexnet2012, else 1)')
  parser.add_argument('--cols', type=int, default=16, help='kernels per row')
  parser.add_argument('--scale', type=int, default=4, help='pixels per kernel pixel')
  parser.add_argument('--normalize', choices=('global', 'per_kernel'), default='global')
  args = parser.parse_args(argv)

  network = load.restore(load.locate(args.workdir, step=args.step))
  model = network.model()
  path, kernel = first_layer_kernel(model, args.layer)
  towers = args.towers or getattr(model, 'groups', 1)
  grid = kernel_grid(kernel, towers=towers, cols=args.cols, scale=args.scale,
                     normalize=args.normalize)
  output = args.output or os.path.join(args.workdir, 'filters.png')
  common.pyplot().imsave(output, grid)
  kh, kw, cin, out = kernel.shape
  print(f'{network.description}: {out} kernels of {kh}x{kw}x{cin} ({path})'
        + (f' in {towers} towers of {out // towers}' if towers > 1 else '')
        + f' -> {output} ({grid.shape[1]}x{grid.shape[0]} px)', file=sys.stderr)


if __name__ == '__main__':
  main()
