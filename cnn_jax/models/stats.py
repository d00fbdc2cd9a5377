"""Parameter and multiply-accumulate counts, computed from the models themselves.

MACs are counted the way torchvision's `_ops` are (`test/common_extended_utils.py`, whose
`conv_flop_count` notes that only multiplication is counted): multiplications of the
convolutions and matrix products only, read off the model's jaxpr in eval mode. Nothing is typed in.
"""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import registry


def abstract_model(name: str, num_classes: int = 1000, **kwargs) -> nnx.Module:
  """The model with ShapeDtypeStructs in place of arrays: no memory, no compute.

  The RNG keys are traced but the RNG counters stay concrete (`ensure_compile_time_eval`): a
  traced counter makes every `rngs()` call scan the whole trace (flax `Variable.set_value` asks the
  tracer for `.sharding`, whose error message walks the jaxpr), quadratic in depth: ResNet-152
  took 28 s instead of 7 s.
  """
  def build(params_key, dropout_key):
    with jax.ensure_compile_time_eval():
      rngs = nnx.Rngs(params=params_key, dropout=dropout_key)
      return registry.create(name, num_classes, rngs=rngs, **kwargs)
  return nnx.eval_shape(build, jax.random.key(0), jax.random.key(1))


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (nnx.Param), BatchNorm statistics excluded."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      lhs, rhs = (v.aval for v in eqn.invars)
      out = eqn.outvars[0].aval
      dn = eqn.params['dimension_numbers']
      # rhs spec: (out feature dim, in feature dim, *spatial dims)
      kernel_in = rhs.shape[dn.rhs_spec[1]]
      kernel_spatial = math.prod(rhs.shape[d] for d in dn.rhs_spec[2:])
      total += math.prod(out.shape) * kernel_in * kernel_spatial
    elif eqn.primitive.name == 'dot_general':
      lhs = eqn.invars[0].aval
      (contract_lhs, _), _ = eqn.params['dimension_numbers']
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in contract_lhs)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += _jaxpr_macs(sub)
  return total


def count_macs(model: nnx.Module, input_size: int, batch: int = 1) -> int:
  """Multiply-accumulates of one eval-mode forward pass at `input_size` (per batch of `batch`)."""
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, input_size, input_size, 3), jnp.float32)

  def forward(state, x):
    out = nnx.merge(graphdef, state)(x, train=False)
    return out

  closed = jax.make_jaxpr(forward)(state, x)
  return _jaxpr_macs(closed.jaxpr)


def model_stats(name: str) -> dict:
  """Parameters and GMACs of the registered model `name` at its default resolution."""
  info = registry.get_info(name)
  model = abstract_model(name)
  return {
      'name': name,
      'params': count_params(model),
      'gmacs': count_macs(model, info.input_size) / 1e9,
      'input_size': info.input_size,
      'top1': info.top1,
      'top5': info.top5,
      'source': info.source,
  }
