"""layers.Conv's bias add (kernels.bias_add, whose bias gradient is kernels.channel_sums) against
torch.nn.Conv2d run here (output and the input, kernel and bias gradients), and channel_sums
against sums worked out by hand; float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import kernels
from cnn_jax.models import layers

torch = pytest.importorskip('torch')

# (batch, height, width, in, out, kernel, stride, padding, groups): odd sizes, batch 1, a strided
# asymmetric-padded conv, AlexNet's two groups.
CASES = [(3, 9, 7, 5, 6, 3, 1, 1, 1), (1, 11, 11, 3, 8, 5, 2, 2, 1), (2, 8, 8, 4, 6, 3, 1, 1, 2)]


def _torch_conv(x, kernel, bias, dy, stride, padding, groups):
  """y, dx, dkernel, dbias of torch's Conv2d in float64 (NHWC / HWIO in and out)."""
  tx = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2).requires_grad_()
  tk = torch.from_numpy(kernel.astype(np.float64)).permute(3, 2, 0, 1).requires_grad_()
  tb = torch.from_numpy(bias.astype(np.float64)).requires_grad_()
  y = torch.nn.functional.conv2d(tx, tk, tb, stride=stride, padding=padding, groups=groups)
  y.backward(torch.from_numpy(dy.astype(np.float64)).permute(0, 3, 1, 2))
  return (y.detach().permute(0, 2, 3, 1).numpy(), tx.grad.permute(0, 2, 3, 1).numpy(),
          tk.grad.permute(2, 3, 1, 0).numpy(), tb.grad.numpy())


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('bias_add', [kernels.bias_add, kernels.portable_bias_add],
                         ids=['kernel', 'portable'])
def test_conv_with_bias_equals_torch(case, dtype, bias_add):
  """bias_add is the CPU path (the kernel's sums where built); portable_bias_add is XLA's."""
  n, h, w, cin, cout, k, stride, pad, groups = case
  conv = layers.Conv(cin, cout, (k, k), stride, padding=((pad, pad), (pad, pad)),
                     feature_group_count=groups, dtype=dtype, bias_add=bias_add,
                     rngs=nnx.Rngs(0))
  rng = np.random.default_rng(n * h * w)
  conv.bias[...] = jnp.asarray(rng.normal(size=cout), jnp.float32)
  x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
  dy = rng.standard_normal((n, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1,
                            cout)).astype(np.float32)
  if dtype == jnp.bfloat16:  # torch sees what the bf16 step sees
    x, dy = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32) for a in (x, dy))
  kernel = np.asarray(jnp.asarray(conv.kernel[...], dtype), np.float32)

  graphdef, params = nnx.split(conv)

  def loss(params, x):
    y = nnx.merge(graphdef, params)(x)
    return jnp.sum(y.astype(jnp.float32) * dy), y
  (_, y), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      params, jnp.asarray(x, dtype))
  want = _torch_conv(x, kernel, np.asarray(conv.bias[...]), dy, stride, pad, groups)
  tol = dict(rtol=1e-5, atol=1e-4) if dtype == jnp.float32 else dict(rtol=2e-2, atol=0.1)
  for got, expected, name in zip((y, dx, dparams['kernel'][...], dparams['bias'][...]), want,
                                 ('y', 'dx', 'dkernel', 'dbias')):
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, err_msg=name, **tol)
  assert dparams['bias'][...].dtype == jnp.float32


@pytest.mark.parametrize('shape', [(4, 7, 5, 6), (16, 3), (1, 1, 1, 40)])
def test_channel_sums_equal_float64_sums(shape):
  x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) + 2
  got = jax.jit(kernels.channel_sums)(x)
  assert got.dtype == jnp.float32 and got.shape == (shape[-1],)
  np.testing.assert_allclose(got, x.astype(np.float64).reshape(-1, shape[-1]).sum(0), rtol=1e-5)


def test_channel_sums_of_bfloat16_accumulate_in_float32():
  """4096 bfloat16 ones sum to 4096 (exact in float32); a bfloat16 running sum stops at 256, where
  256 + 1 rounds back to 256 (8 significand bits)."""
  x = jnp.ones((4, 32, 32, 3), jnp.bfloat16)
  np.testing.assert_array_equal(jax.jit(kernels.channel_sums)(x), np.full(3, 4096.0))
  assert float(jnp.bfloat16(256) + jnp.bfloat16(1)) == 256.0  # the failure it avoids


def test_forced_host_devices_sum_the_bias_gradient_over_the_batch(run_on_host_devices):
  """With 2 forced host devices and the batch sharded, each device sums its half and the halves
  are added (no gather of the gradient): the bias gradient equals float64 sums of the whole."""
  run_on_host_devices('''
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from cnn_jax import kernels
      mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      rng = np.random.default_rng(0)
      x = rng.standard_normal((8, 5, 3, 16)).astype(np.float32)
      dy = rng.standard_normal(x.shape).astype(np.float32)
      dy[:4] += 3  # the halves differ
      grad = jax.jit(jax.grad(lambda b, x: jnp.sum(kernels.bias_add(x, b) * dy)))
      with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P('data')))
        hlo = grad.lower(np.zeros(16, np.float32), xs).compile().as_text()
        assert 'all-gather' not in hlo, hlo
        assert 'custom_call_target="cnn_jax_batch_norm_sums"' in hlo, hlo
        got = grad(np.zeros(16, np.float32), xs)
      np.testing.assert_allclose(got, dy.astype(np.float64).sum((0, 1, 2)), rtol=1e-5)
      print('OK')
  ''')
