"""The model registry: a name -> constructor and the metadata a recipe or a tool needs."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class InputConvention:
  """How the images a network was designed for are scaled: the loader feeds `(x / 255 - mean) / std`
  per channel, x the RGB pixel in 0-255, so mean/std are on the [0, 1] scale."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  description: str


# Every model is trained from scratch here (no Caffe or Torch7 weights are imported), so the RGB
# order is kept even where the original release fed BGR.
INPUT_CONVENTIONS = {
    'torchvision': InputConvention(
        IMAGENET_MEAN, IMAGENET_STD,
        '(x/255 - mean) / std, ImageNet mean/std on the [0, 1] scale (torchvision weights)'),
    'torch7_meanstd': InputConvention(
        IMAGENET_MEAN, IMAGENET_STD,
        '(x/255 - mean) / std, per-channel mean/std of the [0, 1] training images (Torch7 '
        'imagenet-multiGPU.torch estimates them from 10,000 images; ImageNet\'s published '
        'estimate, the values torchvision adopted, is used)'),
    'raw_centred': InputConvention(
        IMAGENET_MEAN, (1 / 255,) * 3,
        'x - 255 * mean: centred raw RGB on the 0-255 scale, no std division (Krizhevsky et al. '
        '2012 §2; Caffe releases); the mean image approximated by the ImageNet mean pixel '
        '(123.675, 116.28, 103.53)'),
    'tf_inception': InputConvention(
        (0.5,) * 3, (0.5,) * 3,
        '(x/255 - 0.5) / 0.5: [-1, 1] (TF-slim inception_preprocessing)'),
}
EVAL_GEOMETRIES = ('torchvision', 'exact')


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What is known about a registered model.

  input_convention: a key of INPUT_CONVENTIONS, the input scale the network's recipe assumes (its
    init, LRN constants and learning rates were chosen for it); `mean` and `std` derive from it.
  eval_geometry: how the eval transform places its centre crop: 'torchvision' (Resize(eval_resize)
    with the long side truncated to whole pixels, then CenterCrop(input_size) at a rounded
    whole-pixel offset, PIL antialiased bilinear: torchvision's eval pixels, for torchvision-derived
    weights) or
    'exact' (the centre `input_size` square of the image rescaled to short side `eval_resize`, at
    the exact sub-pixel position: the papers' own protocol).
  input_size: default (train and eval) crop; min_input_size: smallest image the network accepts;
  eval_resize: short side before the centre crop (crop fraction = input_size / eval_resize);
  params: the exact parameter count at 1000 classes and default options (tested);
  top1/top5: published ImageNet-1k validation accuracy in %, with `source` saying where from.
  """

  name: str
  constructor: Callable[..., nnx.Module]
  kwargs: dict[str, Any]
  family: str
  paper: str
  params: int | None  # None for the tiny test variants
  input_convention: str
  eval_geometry: str
  input_size: int = 224
  min_input_size: int = 32
  eval_resize: int = 256
  top1: float | None = None
  top5: float | None = None
  source: str = ''
  tiny: bool = False  # a small variant for tests and runlocal, not a published network

  def __post_init__(self):
    if self.input_convention not in INPUT_CONVENTIONS:
      raise ValueError(f'model {self.name!r}: unknown input_convention {self.input_convention!r}; '
                       f'choose one of {", ".join(INPUT_CONVENTIONS)}')
    if self.eval_geometry not in EVAL_GEOMETRIES:
      raise ValueError(f'model {self.name!r}: unknown eval_geometry {self.eval_geometry!r}; '
                       f'choose one of {", ".join(EVAL_GEOMETRIES)}')

  @property
  def mean(self) -> tuple[float, float, float]:
    return INPUT_CONVENTIONS[self.input_convention].mean

  @property
  def std(self) -> tuple[float, float, float]:
    return INPUT_CONVENTIONS[self.input_convention].std

  @property
  def crop_fraction(self) -> float:
    return self.input_size / self.eval_resize


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, constructor: Callable[..., nnx.Module], **info) -> None:
  """Register `constructor(num_classes=..., rngs=..., **kwargs)` under `name`; `info` are the
  ModelInfo fields (input_convention and eval_geometry are required)."""
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is registered twice')
  kwargs = info.pop('kwargs', {})
  _REGISTRY[name] = ModelInfo(name=name, constructor=constructor, kwargs=kwargs, **info)


def list_models(include_tiny: bool = True) -> list[str]:
  """Names of the registered models, in registration order."""
  return [n for n, i in _REGISTRY.items() if include_tiny or not i.tiny]


def get_info(name: str) -> ModelInfo:
  """The metadata of `name`; an unknown name raises a KeyError listing the known ones."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(
        f'unknown model {name!r}; known models: {", ".join(list_models())}') from None


def create(name: str, num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, seed: int = 0,
           **kwargs) -> nnx.Module:
  """Build the model `name`. `kwargs` override the registered defaults (dtype, aux_logits, ...).

  `rngs` defaults to `nnx.Rngs(params=seed, dropout=seed + 1)`.
  """
  info = get_info(name)
  if rngs is None:
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  model = info.constructor(num_classes=num_classes, rngs=rngs, **{**info.kwargs, **kwargs})
  model.name = name  # error messages name the registered model
  return model
