"""oneDNN max pooling (cnn_jax.kernels.max_pool): values and gradients against XLA's reduce_window
max and its gradient (select-and-scatter), and the gradient's tie rule against PyTorch's; oneDNN
average pooling (cnn_jax.kernels.avg_pool) against torch's avg_pool2d.

The shapes are the models' poolings: 3x3 stride 2 (ResNet, AlexNet), 2x2 stride 2 (VGG), 3x3
stride 1 'SAME' (GoogLeNet's branch pool), ceil-mode windows that overhang the input (asymmetric
padding: GoogLeNet, SqueezeNet), odd sizes, batch 1, 1 and 832 channels (GoogLeNet's 4e output).
"""
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnn_jax import kernels
from cnn_jax.kernels import pool
from cnn_jax.models import layers

pytestmark = pytest.mark.skipif(pool.unavailable_reason() is not None,
                                reason=str(pool.unavailable_reason()))

# name: (input NHWC, window, strides, padding of H and W or 'SAME')
CASES = {
    '3x3_stride2_pad1': ((2, 16, 16, 8), (3, 3), (2, 2), ((1, 1), (1, 1))),
    '2x2_stride2': ((2, 12, 12, 16), (2, 2), (2, 2), ((0, 0), (0, 0))),
    '3x3_stride1_same': ((2, 9, 9, 8), (3, 3), (1, 1), 'SAME'),
    'ceil_mode_asymmetric': ((2, 14, 14, 8), (3, 3), (2, 2), ((0, 1), (0, 1))),
    'odd_window_and_stride': ((3, 11, 13, 5), (3, 2), (2, 3), ((0, 1), (1, 0))),
    'batch1_channels1': ((1, 7, 9, 1), (3, 3), (2, 2), ((1, 1), (1, 1))),
    'channels832_ceil': ((2, 14, 14, 832), (3, 3), (2, 2), ((0, 1), (0, 1))),
    'channels832_2x2_ceil': ((1, 7, 7, 832), (2, 2), (2, 2), ((0, 1), (0, 1))),
}


def explicit(case):
  shape, window, strides, padding = CASES[case]
  if padding == 'SAME':
    padding = tuple(lax.padtype_to_pads(shape[1:3], window, strides, 'SAME'))
  return shape, window, strides, padding


def xla_max_pool(x, window, strides, padding):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1),
                           ((0, 0), *padding, (0, 0)))


def pool_and_grad(pool_fn, x, cotangent, window, strides, padding):
  """The pooling and its input gradient for `cotangent`, under jit."""
  def run(x, cotangent):
    y, vjp = jax.vjp(lambda x: pool_fn(x, window, strides, padding), x)
    return y, vjp(cotangent)[0]
  return jax.jit(run)(x, cotangent)


def inputs(case, dtype):
  """Tie-free inputs (distinct values, a shuffled range: each exact in float32) and a cotangent
  of small integers, whose sums (where windows overlap) are exact in float32 and bfloat16 in any
  order."""
  shape, window, strides, padding = explicit(case)
  rng = np.random.default_rng(len(case))
  x = (rng.permutation(np.prod(shape)) - np.prod(shape) / 2).reshape(shape).astype(np.float32)
  y = jax.eval_shape(lambda: xla_max_pool(jnp.zeros(shape), window, strides, padding))
  cotangent = rng.integers(-4, 5, y.shape).astype(np.float32)
  return jnp.asarray(x, dtype), jnp.asarray(cotangent, dtype), (window, strides, padding)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('case', CASES)
def test_values_and_gradient_equal_xla(case, dtype):
  """Output and input gradient equal XLA's exactly (in bfloat16 many inputs round to the same
  value: both then pick the same cell, see the tie tests below)."""
  x, cotangent, args = inputs(case, dtype)
  ours = pool_and_grad(kernels.max_pool, x, cotangent, *args)
  xla = pool_and_grad(xla_max_pool, x, cotangent, *args)
  for name, a, b in zip(('output', 'input grad'), ours, xla):
    assert a.shape == b.shape and a.dtype == b.dtype == jnp.dtype(dtype), name
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                  err_msg=name)


def test_random_cotangent_within_float32_rounding_of_xla():
  """A gradient summed from several windows may add in another order than XLA's."""
  x, _, args = inputs('3x3_stride1_same', jnp.float32)
  cotangent = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 8), np.float32))
  _, ours = pool_and_grad(kernels.max_pool, x, cotangent, *args)
  _, xla = pool_and_grad(xla_max_pool, x, cotangent, *args)
  np.testing.assert_allclose(ours, xla, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_nan_and_minus_inf_values_equal_xla(dtype):
  """XLA's max propagates NaN and pools a window of only -inf (and padding) to -inf; oneDNN's
  skips NaN and starts from the lowest finite number: the kernel recomputes such outputs."""
  x = np.full((2, 6, 7, 3), -np.inf, np.float32)
  x[0, 2:, 3:] = np.random.default_rng(0).standard_normal((4, 4, 3))
  x[0, 3, 4, 1] = np.nan
  x[1, 0, 0, 2] = np.nan
  x = jnp.asarray(x, dtype)
  args = ((3, 3), (2, 2), ((1, 1), (1, 1)))
  ours, xla = (np.asarray(jax.jit(f, static_argnums=(1, 2, 3))(x, *args), np.float32)
               for f in (kernels.max_pool, xla_max_pool))
  # by hand: windows rows/cols 2o-1..2o+1; (3, 4) lies in rows o = 1, 2 and column o = 2 only
  assert np.isnan(xla).sum() == 2 + 1 and np.isneginf(xla).sum() > 0
  np.testing.assert_array_equal(ours, xla)


# torch.nn.MaxPool2d arguments (kernel, stride, padding, ceil_mode) of the models
TORCH_POOLS = [(3, 2, 1, False), (2, 2, 0, False), (3, 1, 1, True), (3, 2, 0, True),
               (2, 2, 0, True)]


def tied_input(shape, seed):
  """Many ties: ReLU of integers in [-3, 2] (about 2/3 zeros, the rest 1 or 2)."""
  return np.maximum(np.random.default_rng(seed).integers(-3, 3, shape), 0).astype(np.float32)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('kernel,stride,padding,ceil_mode', TORCH_POOLS)
def test_gradient_with_ties_equals_torch(kernel, stride, padding, ceil_mode, dtype):
  """On ties PyTorch gives each window's gradient to its first maximum in row-major order; so do
  oneDNN's workspace and XLA's select-and-scatter (compared here with torch run in the test)."""
  torch = pytest.importorskip('torch')
  shape = (2, 11, 12, 16)
  x = tied_input(shape, kernel + stride + padding)
  x_jax = jnp.asarray(x, dtype)
  pooled = lambda x: layers.max_pool(x, kernel, stride, padding, ceil_mode)
  y = jax.eval_shape(pooled, x_jax)
  cotangent = np.random.default_rng(1).integers(1, 5, y.shape).astype(np.float32)
  grad = lambda f: jax.jit(lambda x, c: jax.vjp(f, x)[1](c)[0])(x_jax,
                                                                 jnp.asarray(cotangent, dtype))
  ours = grad(pooled)

  torch_dtype = getattr(torch, dtype)
  x_torch = torch.tensor(x).permute(0, 3, 1, 2).to(torch_dtype).requires_grad_()
  y_torch = torch.nn.functional.max_pool2d(x_torch, kernel, stride, padding, ceil_mode=ceil_mode)
  assert tuple(y_torch.permute(0, 2, 3, 1).shape) == y.shape
  y_torch.backward(torch.tensor(cotangent).permute(0, 3, 1, 2).to(torch_dtype))
  want = x_torch.grad.permute(0, 2, 3, 1).float().numpy()
  assert (want != 0).sum() < x.size / 2  # ties: most cells get no gradient
  np.testing.assert_array_equal(np.asarray(ours, np.float32), want)
  # XLA's gradient, the input padded (or cropped where no window reaches) to torch's output size
  high = [(out - 1) * stride + kernel - size - padding
          for out, size in zip(y.shape[1:3], shape[1:3])]
  xla = grad(lambda x: xla_max_pool(
      x[:, :shape[1] + min(high[0], 0), :shape[2] + min(high[1], 0)], (kernel, kernel),
      (stride, stride), [(padding, max(h, 0)) for h in high]))
  np.testing.assert_array_equal(np.asarray(xla, np.float32), want)


def test_cpu_lowering_calls_onednn_forward_and_backward():
  """A jitted gradient of `layers.max_pool` lowered for CPU holds both custom calls and none of
  XLA's pooling."""
  x = jnp.zeros((2, 9, 9, 4))
  text = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(layers.max_pool(x, 3, 2, 1))))).lower(
      x).as_text()
  for kind in ('forward', 'backward'):
    assert f'cnn_jax_onednn_max_pool_{kind}' in text
  assert 'reduce_window' not in text and 'select_and_scatter' not in text


def test_gpu_export_holds_only_xla_pooling():
  """The path is chosen per platform at lowering: an export for CUDA (done on this CPU machine)
  has XLA's reduce_window and select-and-scatter and no custom call."""
  x = jnp.zeros((2, 9, 9, 4))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(layers.max_pool(x, 3, 2, 0, True)))))
  text = jax.export.export(grad, platforms=['cuda'])(x).mlir_module()
  assert 'reduce_window' in text and 'select_and_scatter' in text
  assert 'onednn' not in text and 'custom_call' not in text


@pytest.mark.parametrize('variant', ['float16', 'padding_as_wide_as_window'])
def test_unsupported_configurations_fall_back_to_xla(variant):
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
  window, strides, padding = (3, 3), (2, 2), ((1, 1), (1, 1))
  if variant == 'float16':
    x = x.astype(np.float16)
  else:
    window, padding = (2, 2), ((2, 0), (0, 0))
  call = lambda f: jax.jit(lambda x: f(x, window, strides, padding))
  x = jnp.asarray(x)
  assert 'onednn' not in call(kernels.max_pool).lower(x).as_text()
  np.testing.assert_array_equal(call(kernels.max_pool)(x), call(xla_max_pool)(x))


def test_forced_host_devices_split_the_batch(run_on_host_devices):
  """With 2 forced host devices and the batch sharded, each device pools its half through oneDNN
  (no all-gather of the batch); values and gradients equal XLA's."""
  script = textwrap.dedent('''
      import jax, jax.numpy as jnp, numpy as np
      from jax import lax
      from jax.sharding import NamedSharding, PartitionSpec as P
      from cnn_jax import kernels
      mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      x = np.random.default_rng(0).permutation(8 * 15 * 15 * 16).reshape(8, 15, 15, 16)
      x = jax.device_put(x.astype(np.float32), NamedSharding(mesh, P('data')))
      args = ((3, 3), (2, 2), ((1, 1), (1, 1)))
      ref = lambda x, *a: lax.reduce_window(x, -jnp.inf, lax.max, (1, *a[0], 1), (1, *a[1], 1),
                                            ((0, 0), *a[2], (0, 0)))
      grad = lambda f: jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(f(x, *args)))))
      with jax.set_mesh(mesh):
        hlo = grad(kernels.max_pool).lower(x).compile().as_text()
        assert 'all-gather' not in hlo, hlo
        assert hlo.count('custom_call_target="cnn_jax_onednn_max_pool') == 2, hlo
        (v, g), (v_ref, g_ref) = grad(kernels.max_pool)(x), grad(ref)(x)
        np.testing.assert_allclose(v, v_ref, rtol=1e-6)
        np.testing.assert_array_equal(g, g_ref)
      print('OK')
  ''')
  run_on_host_devices(script)


# Average pooling: (input NHWC, window, strides, padding) of the models' non-ceil average pools —
# Inception's 3x3 stride 1 pad 1 branch pool, DenseNet's 2x2 stride 2 transition, GoogLeNet's aux
# 5x5 stride 3 — and odd sizes, batch 1.
AVG_CASES = {
    '3x3_stride1_pad1': ((2, 17, 17, 24), (3, 3), (1, 1), ((1, 1), (1, 1))),
    '2x2_stride2': ((2, 12, 12, 16), (2, 2), (2, 2), ((0, 0), (0, 0))),
    '5x5_stride3': ((2, 14, 14, 8), (5, 5), (3, 3), ((0, 0), (0, 0))),
    'odd_batch1': ((1, 9, 7, 5), (3, 3), (2, 2), ((1, 1), (1, 1))),
}


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('case', AVG_CASES)
def test_avg_pool_equals_torch(case, dtype):
  """Values and input gradients of kernels.avg_pool (oneDNN's on this CPU) against
  torch.nn.functional.avg_pool2d (count_include_pad=True) run here in float64."""
  torch = pytest.importorskip('torch')
  shape, window, strides, padding = AVG_CASES[case]
  rng = np.random.default_rng(0)
  x = np.asarray(jnp.asarray(rng.standard_normal(shape), dtype).astype(jnp.float32))
  dy_shape = jax.eval_shape(lambda x: kernels.avg_pool(x, window, strides, padding), x).shape
  dy = rng.standard_normal(dy_shape).astype(np.float32)
  y, vjp = jax.vjp(lambda x: kernels.avg_pool(x, window, strides, padding), jnp.asarray(x, dtype))
  (dx,) = vjp(jnp.asarray(dy, dtype))
  tx = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2).requires_grad_()
  ty = torch.nn.functional.avg_pool2d(tx, window, strides, padding=[p[0] for p in padding],
                                      count_include_pad=True)
  ty.backward(torch.from_numpy(dy.astype(np.float64)).permute(0, 3, 1, 2))
  tol = 1e-6 if dtype == 'float32' else 1e-2  # bf16: one rounding of the output
  for got, want in ((y, ty.detach()), (dx, tx.grad)):
    np.testing.assert_allclose(np.asarray(got, np.float32), want.permute(0, 2, 3, 1).numpy(),
                               rtol=tol, atol=tol)


def test_avg_pool_lowering_is_onednn_on_cpu_and_xla_for_gpu():
  x = jnp.ones((2, 8, 8, 4))
  pool = lambda x: kernels.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
  f = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(pool(x)))))
  cpu = f.lower(x).as_text()
  assert 'cnn_jax_onednn_avg_pool_forward' in cpu and 'cnn_jax_onednn_avg_pool_backward' in cpu
  cuda = jax.export.export(f, platforms=['cuda'])(x).mlir_module()
  assert 'cnn_jax_onednn' not in cuda and 'reduce_window' in cuda
