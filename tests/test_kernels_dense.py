"""kernels.dense_dot_general: lax.dot_general's values and gradients, with the kernel gradient
produced in the kernel's (in, out) layout (no transpose left for the optimizer update to do)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes

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


def _sgd_step_hlo(dot_general, promote_dtype) -> str:
  """Compiled HLO of a bf16 dense layer's SGD-momentum step with float32 parameters."""
  layer = layers.linear(512, 256, dtype=jnp.bfloat16, dot_general=dot_general,
                        promote_dtype=promote_dtype, rngs=nnx.Rngs(0))
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
    assert transposes(_sgd_step_hlo(jax.lax.dot_general, nnx_dtypes.promote_dtype))
  assert not transposes(_sgd_step_hlo(kernels.dense_dot_general, kernels.dense_promote_dtype))


ONEDNN = pytest.mark.skipif(not kernels.dense_supports(jnp.bfloat16),
                            reason='no oneDNN bfloat16 matmul here (`make kernels`, CPU)')
MATMUL_CALL = '@cnn_jax_onednn_matmul'


@pytest.mark.parametrize('x_shape,features', [((16, 300), 130), ((1, 7), 1), ((2, 3, 33), 17)])
def test_bfloat16_layer_equals_torch_linear_with_a_float32_kernel_gradient(x_shape, features):
  """`layers.linear` in bf16 with float32 parameters (oneDNN's matmuls on CPU where they run)
  against torch's F.linear run here in float64 on the same bf16 operands and cotangent: y and dx
  come out in bf16 (tolerance 2^-7 of the largest), the kernel gradient x^T @ dy accumulated into
  float32 and never rounded to bf16 (tolerance 1e-5: bf16 rounding would miss it by ~2^-9)."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(1)
  layer = layers.linear(x_shape[-1], features, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  layer.kernel.value = jnp.asarray(rng.standard_normal(layer.kernel.shape), jnp.bfloat16
                                   ).astype(jnp.float32)  # bf16 values held in float32
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.bfloat16)
  dy = jnp.asarray(rng.standard_normal((*x_shape[:-1], features)), jnp.bfloat16)
  graphdef, params = nnx.split(layer)
  y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
  dparams, dx = vjp(dy)
  assert y.dtype == dx.dtype == jnp.bfloat16 and dparams['kernel'].value.dtype == jnp.float32

  f64 = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)
  tx, tw, tb = f64(x), f64(layer.kernel.value.T), f64(layer.bias.value)  # torch: (out, in)
  ty = torch.nn.functional.linear(tx, tw, tb)
  ty.backward(torch.tensor(np.asarray(dy, np.float64)))
  for got, want, tol in [(y, ty, 2 ** -7), (dx, tx.grad, 2 ** -7),
                         (dparams['kernel'].value, tw.grad.T, 1e-5)]:
    want = want.detach().numpy()
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol,
                               atol=tol * float(np.max(np.abs(want))))


@ONEDNN
def test_bfloat16_dense_lowers_to_three_onednn_matmuls_and_float32_to_none():
  x, w = jnp.ones((4, 24)), jnp.ones((24, 8))
  dims = (((1,), (0,)), ((), ()))
  text = lambda dtype: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(kernels.dense_dot_general(
      x.astype(dtype), w, dims).astype(jnp.float32))), argnums=(0, 1))).lower(x, w).as_text()
  assert text(jnp.bfloat16).count(f'{MATMUL_CALL}(') == 3  # forward, dx, dw
  assert MATMUL_CALL not in text(jnp.float32)
  cuda = jax.export.export(jax.jit(lambda x, w: kernels.dense_dot_general(
      x.astype(jnp.bfloat16), w, dims)), platforms=['cuda'])(x, w).mlir_module()
  assert 'stablehlo.dot_general' in cuda and MATMUL_CALL not in cuda


@ONEDNN
def test_under_a_data_parallel_mesh_the_dense_layer_stays_xlas(run_on_host_devices):
  """With automatic mesh axes XLA's partitioner would gather the operands of an opaque call: the
  matmul is XLA's there. Its values are checked against the single-device oneDNN call: two
  implementations (XLA's dot, oneDNN's matmul), to bf16 rounding."""
  run_on_host_devices('''
      import jax, jax.numpy as jnp, numpy as np
      from cnn_jax import kernels
      x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 40)), jnp.bfloat16)
      w = jnp.asarray(np.random.default_rng(1).standard_normal((40, 24)), jnp.float32)
      f = jax.jit(lambda x, w: kernels.dense_dot_general(x, w, (((1,), (0,)), ((), ()))))
      single = f(x, w)
      assert single.dtype == jnp.bfloat16
      assert '@cnn_jax_onednn_matmul' in f.lower(x, w).as_text()
      mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      with jax.set_mesh(mesh):
        xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.P('data')))
        assert '@cnn_jax_onednn_matmul' not in f.lower(xs, w).as_text()
        np.testing.assert_allclose(np.asarray(f(xs, w), np.float32),
                                   np.asarray(single, np.float32), rtol=1e-2, atol=1e-2)
      print('OK')
  ''')
