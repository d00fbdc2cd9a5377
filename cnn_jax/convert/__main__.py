"""Convert torchvision weights to a cnn_jax weights checkpoint.

  python -m cnn_jax.convert torchvision --model resnet50 --weights resnet50.pth --out DIR

The `.pth` file is a torchvision state_dict (e.g. from `torchvision.models.resnet50(weights=...)
.state_dict()` or the download cache, ~/.cache/torch/hub/checkpoints); it is read with
`torch.load(weights_only=True)`. The number of classes and the aux heads follow the file.
"""

import math
import os

import jax
from absl import app, flags
from flax import nnx

from cnn_jax import errors
from cnn_jax.convert import torchvision, weights

_MODEL = flags.DEFINE_string('model', None, 'torchvision model name, e.g. resnet50.')
_WEIGHTS = flags.DEFINE_string('weights', None, 'a .pth file holding its state_dict.')
_OUT = flags.DEFINE_string('out', None, 'directory to write (must not exist).')
_TRANSFORM_INPUT = flags.DEFINE_bool(
    'transform_input', None, 'googlenet/inception_v3: remap ImageNet-normalised input to [-1, 1] '
    'inside the model, as torchvision does for its pretrained weights (default: true for them).')
flags.mark_flags_as_required(['model', 'weights', 'out'])


def main(argv):
  if argv[1:] != ['torchvision']:
    raise app.UsageError(f'usage: python -m cnn_jax.convert torchvision --model NAME --weights '
                         f'FILE.pth --out DIR (got {" ".join(argv[1:]) or "no source"}). '
                         f'Supported models: {", ".join(torchvision.supported_models())}')
  if os.path.exists(_OUT.value):
    raise FileExistsError(f'{_OUT.value} exists; choose another --out or delete it.')
  overrides = {} if _TRANSFORM_INPUT.value is None else {'transform_input': _TRANSFORM_INPUT.value}
  # A wrong file or model is one line `error: ...` (cnn_jax.errors.run).
  state_dict = torchvision.read_state_dict(_WEIGHTS.value)
  kwargs = {**torchvision.model_kwargs(_MODEL.value, state_dict), **overrides}
  state = torchvision.convert_state_dict(_MODEL.value, state_dict, **kwargs)
  out = weights.save(_OUT.value, _MODEL.value, state, kwargs, source=_WEIGHTS.value)
  params = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.filter_state(state, nnx.Param)))
  print(f'{_MODEL.value} {kwargs}: {params:,} parameters (+ BatchNorm statistics) written to {out}')

if __name__ == '__main__':
  errors.run(main)
