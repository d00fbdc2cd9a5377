"""kernels.dense_dot_general: lax.dot_general's values and gradients, with the kernel gradient
produced in the kernel's (in, out) layout (no transpose left for the optimizer update to do)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import kernels
from cnn_jax.models import layers

SHAPES = [((16, 96), (96, 40)), ((2, 3, 5, 7), (7, 11)), ((1, 4), (4, 3))]


@pytest.mark.parametrize('x_shape,w_shape', SHAPES)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_lax_dot_general(x_shape, w_shape, dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  dims = (((len(x_shape) - 1,), (0,)), ((), ()))

  def loss(dot):
    # float32 parameters, `dtype` compute: the trainer's mixed precision.
    return lambda x, w: jnp.sum(jnp.sin(dot(x.astype(dtype), w.astype(dtype), dims)
                                        .astype(jnp.float32)))

  want = jax.value_and_grad(loss(jax.lax.dot_general), argnums=(0, 1))(x, w)
  got = jax.value_and_grad(loss(kernels.dense_dot_general), argnums=(0, 1))(x, w)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), rtol=tol,
                               atol=tol * float(np.max(np.abs(np.asarray(a, np.float32)))))


def test_other_dot_generals_are_passed_through():
  a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  dims = (((2,), (1,)), ((0,), (0,)))  # batched: not a dense layer's matmul
  np.testing.assert_array_equal(kernels.dense_dot_general(a, b, dims),
                                jax.lax.dot_general(a, b, dims))


def _sgd_step_hlo(dot_general) -> str:
  """Compiled HLO of a bf16 dense layer's SGD-momentum step with float32 parameters."""
  layer = layers.linear(512, 256, dtype=jnp.bfloat16, dot_general=dot_general, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(layer)

  def step(params, momentum, x):
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x).astype(jnp.float32) ** 2))(params)
    momentum = jax.tree.map(lambda m, g: 0.9 * m + g, momentum, grads)
    return jax.tree.map(lambda p, m: p - 0.01 * m, params, momentum), momentum

  x = jnp.ones((8, 512), jnp.float32)
  return jax.jit(step).lower(params, params, x).compile().as_text()


def test_kernel_gradient_needs_no_transpose_in_mixed_precision():
  # With lax.dot_general XLA:CPU leaves a (256, 512) -> (512, 256) transpose of the kernel gradient
  # behind the casts, inside the update; the dense dot_general computes it as (512, 256).
  transposes = lambda hlo: [line for line in hlo.splitlines()
                            if ' transpose(' in line and '[512,256]' in line.split('=')[1][:20]]
  if jax.default_backend() == 'cpu':
    assert transposes(_sgd_step_hlo(jax.lax.dot_general))
  assert not transposes(_sgd_step_hlo(kernels.dense_dot_general))
