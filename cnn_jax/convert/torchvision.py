"""torchvision state_dict -> cnn_jax parameters and BatchNorm statistics.

One mechanism for every family: our model's state (built abstractly, no init cost) and the
state_dict are both grouped into modules (`convs.0` <-> `features.0`), a per-family name map pairs
them, and each leaf is converted by its kind:

  conv kernel   OIHW (O, I/groups, kh, kw) -> HWIO (kh, kw, I/groups, O)   (grouped convs too)
  linear kernel (out, in) -> (in, out)
  BatchNorm     weight, bias, running_mean, running_var -> scale, bias, mean, var
                (num_batches_tracked is unused: our momentum is fixed)

The fc6-style flattens need no permutation: our AlexNet and VGG flatten the pooled features in
PyTorch's (C, H, W) order. A family's name map is a `Family`: `Seq`s pair an ordered group of our
modules with the numbered children of a torch `nn.Sequential`, and `renames` are regexes for the
rest (unmatched names are used as they are).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from typing import Any, Callable, Mapping

import numpy as np
from flax import nnx

from cnn_jax.convert import weights

# Our leaf name -> the torch parameter/buffer name it comes from.
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
               'var': 'running_var'}
_IGNORED_TORCH_LEAVES = ('num_batches_tracked',)


@dataclasses.dataclass(frozen=True)
class Seq:
  """Our modules `ours` in order <-> the children `<torch>.<i>` that hold parameters, by index.

  `ours` names a list attribute (`'convs'`: its items in order) or gives explicit module names.
  With `kind` ('conv', 'linear' or 'bn'), only torch children of that kind count (VGG-BN's
  `features` interleaves convs and BatchNorms).
  """

  ours: str | tuple[str, ...]
  torch: str
  kind: str | None = None


@dataclasses.dataclass(frozen=True)
class Family:
  """How one family's module names map onto torchvision's.

  A module of ours inside a `Seq` takes the paired torch name; any other goes through `renames`
  (regex substitutions applied in turn; no match keeps the name).

  head: the torch key of the classifier weight (its first dimension is the number of classes).
  model_kwargs: model options implied by the state_dict (e.g. aux heads present or not).
  """

  head: str
  seqs: tuple[Seq, ...] = ()
  renames: tuple[tuple[str, str], ...] = ()
  model_kwargs: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda state_dict: {}


_ALEXNET = Family(head='classifier.6.weight',
                  seqs=(Seq('convs', 'features'), Seq('fcs', 'classifier')))
_VGG = Family(head='classifier.6.weight',
              seqs=(Seq('convs', 'features', 'conv'), Seq('bns', 'features', 'bn'),
                    Seq('fcs', 'classifier')))
_SQUEEZENET = Family(head='classifier.1.weight',
                     seqs=(Seq(('conv1', *(f'fire{i}' for i in range(2, 10))), 'features'),),
                     renames=((r'^final_conv$', 'classifier.1'),))

_MOBILENET = Family(head='classifier.1.weight',  # our conv-BN units hold `conv`, `bn` for 0, 1
                    renames=((r'\.conv$', '.0'), (r'\.bn$', '.1'),
                             (r'^classifier$', 'classifier.1')))
_RESNET = Family(head='fc.weight', renames=((r'\.downsample\.conv$', '.downsample.0'),
                                           (r'\.downsample\.bn$', '.downsample.1')))
_DENSENET = Family(head='classifier.weight')  # our names are torchvision's


def _aux_and_transform(aux_prefix: str):
  """Aux heads iff the state_dict has them; `transform_input` on, as torchvision sets it for its
  (TF-ported) pretrained weights (`googlenet()` / `inception_v3()` in torchvision 0.29 `models/`):
  they expect inputs in [-1, 1]."""
  return lambda state_dict: {'aux_logits': any(k.startswith(aux_prefix) for k in state_dict),
                             'transform_input': True}


_GOOGLENET = Family(head='fc.weight', model_kwargs=_aux_and_transform('aux1.'),
                    renames=((r'\.branch4\.', '.branch4.1.'),))  # torch: [max-pool, conv]
_INCEPTION = Family(head='fc.weight', model_kwargs=_aux_and_transform('AuxLogits.'))

# torchvision model name -> family. Our registered names are torchvision's.
FAMILIES: dict[str, Family] = {
    'alexnet': _ALEXNET,
    **{f'vgg{d}{bn}': _VGG for d in (11, 13, 16, 19) for bn in ('', '_bn')},
    'squeezenet1_0': _SQUEEZENET,
    'squeezenet1_1': _SQUEEZENET,
    'mobilenet_v2': _MOBILENET,
    **{f'resnet{d}': _RESNET for d in (18, 34, 50, 101, 152)},
    'densenet121': _DENSENET,
    'googlenet': _GOOGLENET,
    'inception_v3': _INCEPTION,
}


def supported_models() -> list[str]:
  return list(FAMILIES)


def _family(name: str) -> Family:
  if name not in FAMILIES:
    raise KeyError(f'no torchvision conversion for model {name!r}; supported models: '
                   f'{", ".join(supported_models())}')
  return FAMILIES[name]


def _group(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{'a.b.leaf': v} -> {'a.b': {'leaf': v}}, keeping the order of first appearance."""
  modules: dict[str, dict[str, Any]] = {}
  for key, value in flat.items():
    module, _, leaf = key.rpartition('.')
    modules.setdefault(module, {})[leaf] = value
  return modules


def _torch_kind(leaves: Mapping[str, Any]) -> str | None:
  if 'running_mean' in leaves:
    return 'bn'
  weight = leaves.get('weight')
  return None if weight is None else {4: 'conv', 2: 'linear'}.get(weight.ndim)


def _children(paths, parent: str) -> list[str]:
  """The distinct `<parent>.<i>` prefixes among `paths`, sorted by i."""
  pattern = re.compile(rf'^({re.escape(parent)}\.(\d+))(\.|$)')
  found = {m.group(1): int(m.group(2)) for p in paths if (m := pattern.match(p))}
  return sorted(found, key=found.get)


def _name_map(family: Family, ours: list[str],
              torch_modules: dict[str, dict]) -> tuple[dict[str, str], list[str]]:
  """Our module path -> torch module path for every module of ours, and notes on unequal `Seq`s."""
  prefixes, notes = {}, []
  for seq in family.seqs:
    mine = _children(ours, seq.ours) if isinstance(seq.ours, str) else list(seq.ours)
    theirs = [c for c in _children(torch_modules, seq.torch)
              if seq.kind is None or _torch_kind(torch_modules.get(c, {})) == seq.kind]
    if len(mine) != len(theirs):
      notes.append(f'our {seq.ours} has {len(mine)} modules, torch {seq.torch}.* has '
                   f'{len(theirs)} {seq.kind or "modules"} with parameters')
    prefixes.update(zip(mine, theirs))
  mapping = {}
  for path in ours:
    prefix = max((p for p in prefixes if path == p or path.startswith(p + '.')), key=len,
                 default=None)
    if prefix is not None:
      mapping[path] = prefixes[prefix] + path[len(prefix):]
    else:
      mapping[path] = path
      for pattern, repl in family.renames:
        mapping[path] = re.sub(pattern, repl, mapping[path])
  return mapping, notes


def _to_numpy(tensor) -> np.ndarray:
  return tensor.detach().cpu().float().numpy() if hasattr(tensor, 'detach') else np.asarray(tensor)


def _convert_leaf(ours: str, theirs: np.ndarray) -> np.ndarray:
  if ours == 'kernel' and theirs.ndim == 4:
    theirs = theirs.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  elif ours == 'kernel' and theirs.ndim == 2:
    theirs = theirs.T  # (out, in) -> (in, out)
  return theirs


def model_kwargs(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The `models.create` options that match `state_dict`: num_classes and family options."""
  family = _family(name)
  if family.head not in state_dict:
    raise KeyError(f'{name}: the state_dict has no classifier weight {family.head!r}; is it a '
                   f'torchvision {name} state_dict?')
  return {'num_classes': int(state_dict[family.head].shape[0]), **family.model_kwargs(state_dict)}


def convert_state_dict(name: str, state_dict: Mapping[str, Any], **kwargs) -> nnx.State:
  """The params and BatchNorm statistics of cnn_jax model `name` from a torchvision state_dict.

  `kwargs` override the model options derived from the state_dict (`model_kwargs`). When the two
  do not correspond, raises a ValueError listing the missing and unexpected keys and the shapes
  that differ.
  """
  kwargs = {**model_kwargs(name, state_dict), **kwargs}
  return _convert(name, state_dict, weights.skeleton(name, **kwargs).weights, kwargs)


def _convert(name: str, state_dict: Mapping[str, Any], abstract: nnx.State,
             kwargs: Mapping[str, Any]) -> nnx.State:
  """convert_state_dict into `abstract`, the weights' shapes of model `name` built with `kwargs`."""
  family = _family(name)
  ours = {'.'.join(map(str, path)): var for path, var in nnx.to_flat_state(abstract)}
  torch_modules = _group({k: v for k, v in state_dict.items()
                          if k.rpartition('.')[2] not in _IGNORED_TORCH_LEAVES})
  name_map, notes = _name_map(family, list(_group(ours)), torch_modules)

  converted, used, missing, wrong_shape = [], set(), [], []
  for key, var in ours.items():
    module, _, leaf = key.rpartition('.')
    torch_key = f'{name_map[module]}.{_LEAF_NAMES[leaf]}'
    if torch_key not in state_dict:
      missing.append(torch_key if torch_key == key else f'{torch_key} (for our {key})')
      continue
    used.add(torch_key)
    value = _convert_leaf(leaf, _to_numpy(state_dict[torch_key]))
    if value.shape != var.shape:
      wrong_shape.append(f'{torch_key} {tuple(state_dict[torch_key].shape)} -> {key} needs '
                         f'{var.shape}')
      continue
    converted.append((tuple(int(p) if p.isdigit() else p for p in key.split('.')),
                      var.replace(value=np.asarray(value, var.dtype))))
  unexpected = [k for k in state_dict
                if k not in used and k.rpartition('.')[2] not in _IGNORED_TORCH_LEAVES]
  if missing or unexpected or wrong_shape:
    raise ValueError('\n'.join([
        f'the state_dict does not match cnn_jax model {name} with options {kwargs}:',
        *(f'  {note}' for note in notes),
        f'  missing keys ({len(missing)}): {", ".join(missing) or "-"}',
        f'  unexpected keys ({len(unexpected)}): {", ".join(unexpected) or "-"}',
        f'  wrong shapes ({len(wrong_shape)}): {"; ".join(wrong_shape) or "-"}',
        'Is it a torchvision state_dict of this model? Pass model options (e.g. num_classes) '
        'that match it.']))
  return nnx.from_flat_state(converted)


def read_state_dict(path: str) -> dict[str, Any]:
  """The state_dict in a `.pth` file, read with `torch.load(weights_only=True)` (no plain pickle).

  Also accepts a training checkpoint holding it under 'state_dict' or 'model', and strips the
  'module.' prefix that `nn.DataParallel` adds.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('reading .pth files needs torch, an optional extra: '
                      'pip install -r requirements-torch.txt') from e
  try:
    obj = torch.load(path, weights_only=True, map_location='cpu')
  except pickle.UnpicklingError:  # objects other than tensors: a whole model, an optimizer ...
    raise ValueError(f'{path} is no file of tensors: it holds other pickled objects (e.g. a whole '
                     'model saved with torch.save(model)), which are not loaded as they could run '
                     'code, or is no torch file; save the weights with '
                     '`torch.save(model.state_dict(), path)`.') from None
  if isinstance(obj, Mapping) and not all(torch.is_tensor(v) for v in obj.values()):
    obj = next((obj[k] for k in ('state_dict', 'model') if isinstance(obj.get(k), Mapping)), obj)
  if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
    raise ValueError(f'{path} holds no state_dict (a mapping of names to tensors); save one with '
                     '`torch.save(model.state_dict(), path)`.')
  if obj and all(k.startswith('module.') for k in obj):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  return dict(obj)


def load_model(name: str, state_dict: Mapping[str, Any], *, seed: int = 0, **kwargs) -> nnx.Module:
  """cnn_jax model `name` holding a torchvision state_dict's weights (see convert_state_dict)."""
  kwargs = {**model_kwargs(name, state_dict), **kwargs}
  graphdef, abstract, rest = weights.skeleton(name, seed=seed, **kwargs)
  return nnx.merge(graphdef, _convert(name, state_dict, abstract, kwargs), rest)
