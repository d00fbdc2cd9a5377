"""oneDNN convolutions (cnn_jax.kernels): values and gradients against XLA's own convolution.

The reference is `lax.conv_general_dilated` compiled by XLA (an implementation independent of
oneDNN), on the shapes the models use: 1x1, 3x3, 5x5, ResNet's 7x7 stride 2 stem, AlexNet's 11x11
stride 4 conv1 and groups=2 towers, MobileNet's depthwise convolutions, ENet's dilated ones, odd
sizes, asymmetric padding and batch 1.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from cnn_jax import kernels

pytestmark = pytest.mark.skipif(kernels.unavailable_reason() is not None,
                                reason=str(kernels.unavailable_reason()))

DN = ('NHWC', 'HWIO', 'NHWC')
# (input NHWC, kernel HWIO, conv arguments)
CASES = {
    '1x1': ((2, 5, 5, 8), (1, 1, 8, 16), dict(window_strides=(1, 1), padding='VALID')),
    '3x3_same': ((2, 7, 7, 4), (3, 3, 4, 8), dict(window_strides=(1, 1), padding='SAME')),
    '5x5': ((1, 9, 9, 3), (5, 5, 3, 4), dict(window_strides=(1, 1), padding=((2, 2), (2, 2)))),
    '7x7_stride2': ((2, 15, 15, 3), (7, 7, 3, 8),
                    dict(window_strides=(2, 2), padding=((3, 3), (3, 3)))),
    '11x11_stride4': ((1, 35, 35, 3), (11, 11, 3, 8),
                      dict(window_strides=(4, 4), padding=((2, 2), (2, 2)))),
    'groups2': ((2, 7, 7, 8), (3, 3, 4, 6),
                dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), feature_group_count=2)),
    'depthwise_stride2': ((2, 9, 9, 8), (3, 3, 1, 8),
                          dict(window_strides=(2, 2), padding=((1, 1), (1, 1)),
                               feature_group_count=8)),
    'depthwise_multiplier2': ((1, 6, 6, 4), (3, 3, 1, 8),
                              dict(window_strides=(1, 1), padding='SAME', feature_group_count=4)),
    'odd_asymmetric': ((3, 11, 13, 5), (3, 2, 5, 7),
                       dict(window_strides=(2, 3), padding=((0, 1), (2, 1)))),
    'dilated': ((1, 12, 12, 4), (3, 3, 4, 4),
                dict(window_strides=(1, 1), padding='SAME', rhs_dilation=(2, 3))),
    # wide enough for oneDNN's blocked (AMX / brgemm) kernels; TF's SAME at stride 2 pads (0, 1)
    'wide_stride2': ((2, 14, 14, 64), (3, 3, 64, 128), dict(window_strides=(2, 2), padding='SAME')),
}


def conv_and_grads(conv, x, w, cotangent, args):
  """The convolution and its gradients wrt input and kernel for `cotangent`, under jit."""
  def run(x, w, cotangent):
    y, vjp = jax.vjp(lambda x, w: conv(x, w, dimension_numbers=DN, **args), x, w)
    return (y, *vjp(cotangent))
  return jax.jit(run)(x, w, cotangent)


def inputs(case, dtype):
  x_shape, w_shape, args = CASES[case]
  rng = np.random.default_rng(len(case))
  x, w = (jnp.asarray(rng.standard_normal(shape, np.float32), dtype) for shape in (x_shape, w_shape))
  y = jax.eval_shape(lambda: lax.conv_general_dilated(x, w, dimension_numbers=DN, **args))
  return x, w, jnp.asarray(rng.standard_normal(y.shape, np.float32), dtype), args


@pytest.mark.parametrize('case', CASES)
def test_float32_matches_xla(case):
  """Output, input gradient and kernel gradient within 1e-5 of XLA's, relative to the largest."""
  x, w, cotangent, args = inputs(case, jnp.float32)
  ours = conv_and_grads(kernels.conv_general_dilated, x, w, cotangent, args)
  xla = conv_and_grads(lax.conv_general_dilated, x, w, cotangent, args)
  for name, a, b in zip(('output', 'input grad', 'kernel grad'), ours, xla):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize('case', CASES)
def test_bfloat16_matches_float32_once_rounded(case):
  """bf16 in and out with float32 accumulation: each value is the float32 result of the same
  bf16 numbers rounded once to bfloat16 (8 significant bits: relative error <= 2**-8), up to
  float32 summation noise."""
  x, w, cotangent, args = inputs(case, jnp.bfloat16)
  ours = conv_and_grads(kernels.conv_general_dilated, x, w, cotangent, args)
  exact = conv_and_grads(lax.conv_general_dilated, *(a.astype(jnp.float32)
                                                     for a in (x, w, cotangent)), args)
  for name, a, b in zip(('output', 'input grad', 'kernel grad'), ours, exact):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=2.0**-8,
                               atol=1e-5 * np.abs(b).max(), err_msg=name)


def test_nnx_conv_takes_it_as_its_convolution():
  """`nnx.Conv(..., conv_general_dilated=kernels.conv_general_dilated)` (how the models use it:
  nnx passes `precision` and `out_sharding` too) gives nnx's default output and gradients."""
  def layer(**kwargs):
    return nnx.Conv(8, 16, (3, 3), strides=2, padding=((1, 1), (0, 1)), feature_group_count=2,
                    rngs=nnx.Rngs(0), **kwargs)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 8), np.float32))
  loss = lambda model: jnp.sum(jnp.sin(model(x)))
  ours, xla = layer(conv_general_dilated=kernels.conv_general_dilated), layer()
  assert 'cnn_jax_onednn_conv_backward_weights' in jax.jit(nnx.grad(loss)).lower(ours).as_text()
  np.testing.assert_allclose(ours(x), xla(x), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(nnx.grad(loss)(ours)), jax.tree.leaves(nnx.grad(loss)(xla))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_cpu_lowering_calls_onednn_forward_and_backward():
  """The tests above run the custom calls: a jitted gradient lowered for CPU holds all three."""
  x, w, cotangent, args = inputs('groups2', jnp.float32)
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(
      kernels.conv_general_dilated(x, w, dimension_numbers=DN, **args))), argnums=(0, 1)))
  text = grad.lower(x, w).as_text()
  for kind in ('forward', 'backward_data', 'backward_weights'):
    assert f'cnn_jax_onednn_conv_{kind}' in text
  assert 'stablehlo.convolution' not in text


def test_gpu_export_holds_only_xla_convolution():
  """The path is chosen per platform at lowering: an export for CUDA (done on this CPU machine)
  has XLA's convolution and no CPU custom call."""
  x, w, _, args = inputs('3x3_same', jnp.float32)
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(
      kernels.conv_general_dilated(x, w, dimension_numbers=DN, **args)), argnums=(0, 1)))
  text = jax.export.export(grad, platforms=['cuda'])(x, w).mlir_module()
  assert 'stablehlo.convolution' in text
  assert 'onednn' not in text and 'custom_call' not in text


@pytest.mark.parametrize('variant', ['lhs_dilation', 'nchw', 'float16', 'negative_padding'])
def test_unsupported_configurations_fall_back_to_xla(variant):
  x, w, _, args = inputs('3x3_same', jnp.float32)
  dn = DN
  if variant == 'lhs_dilation':
    args = dict(args, lhs_dilation=(2, 2), padding=((1, 1), (1, 1)))
  elif variant == 'nchw':
    x, dn = jnp.transpose(x, (0, 3, 1, 2)), ('NCHW', 'HWIO', 'NCHW')
  elif variant == 'float16':
    x, w = x.astype(jnp.float16), w.astype(jnp.float16)
  else:
    args = dict(args, padding=((-1, 1), (0, 0)))
  conv = lambda c: jax.jit(lambda x, w: c(x, w, dimension_numbers=dn, **args))
  assert 'onednn' not in conv(kernels.conv_general_dilated).lower(x, w).as_text()
  if variant != 'negative_padding':  # XLA:CPU (jaxlib 0.10.2) returns garbage rows for it
    np.testing.assert_array_equal(conv(kernels.conv_general_dilated)(x, w),
                                  conv(lax.conv_general_dilated)(x, w))


def test_forced_host_devices_share_the_cores_and_split_the_batch(run_on_host_devices):
  """With 2 forced host devices: each call gets half the cores; a jitted step traced under the
  mesh runs each device's half batch through oneDNN (no all-gather of the batch, one all-reduce
  of the kernel gradient), also inside a user's `jax.shard_map` (AlexNet's towers), with the
  two devices running the same convolution at once; values equal XLA's."""
  script = textwrap.dedent('''
      import os, re
      import jax, jax.numpy as jnp, numpy as np
      from jax import lax
      from jax.sharding import NamedSharding, PartitionSpec as P
      from cnn_jax import kernels
      assert kernels.threads() == max(1, len(os.sched_getaffinity(0)) // 2), kernels.threads()
      mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      rng = np.random.default_rng(0)
      x = jax.device_put(rng.standard_normal((8, 16, 16, 16), np.float32),
                         NamedSharding(mesh, P('data')))
      w = rng.standard_normal((3, 3, 16, 16), np.float32)
      same = lambda conv: lambda x, w: conv(x, w, (1, 1), 'SAME',
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      towers = lambda conv: jax.shard_map(same(conv), mesh=mesh, in_specs=(P('data'), P()),
                                          out_specs=P('data'))
      grad = lambda f: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1)))
      with jax.set_mesh(mesh):
        hlo = grad(same(kernels.conv_general_dilated)).lower(x, w).compile().as_text()
        assert 'all-gather' not in hlo and len(re.findall(' all-reduce[(]', hlo)) == 1, hlo
        assert len(re.findall('custom_call_target="cnn_jax_onednn', hlo)) == 3, hlo
        for wrap in (same, towers):
          for _ in range(3):
            ours = grad(wrap(kernels.conv_general_dilated))(x, w)
            for a, b in zip(ours, grad(wrap(lax.conv_general_dilated))(x, w)):
              np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
      print('OK')
  ''')
  run_on_host_devices(script)


def test_concurrent_calls_share_the_cores():
  """XLA runs independent custom calls at once (an Inception-like block of six branches); each
  call takes all the cores, so oneDNN's own timestamps (ONEDNN_VERBOSE) show no two convolutions
  running at the same time (without the shared budget some overlap: two OpenMP teams per core)."""
  script = textwrap.dedent('''
      import jax, jax.numpy as jnp, numpy as np
      from cnn_jax import kernels
      rng = np.random.default_rng(0)
      x = rng.standard_normal((8, 28, 28, 64), np.float32)
      ws = [rng.standard_normal((k, k, 64, 32), np.float32) for k in (1, 3, 5, 1, 3, 1)]
      conv = lambda x, w: kernels.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      branches = lambda x, ws: sum(jnp.sum(jnp.sin(conv(jax.nn.relu(x), w))) for w in ws)
      step = jax.jit(jax.grad(branches, argnums=(0, 1)))
      x, ws = jax.device_put((x, ws))
      for _ in range(10):
        jax.block_until_ready(step(x, ws))
  ''')
  env = dict(os.environ, JAX_PLATFORMS='cpu', ONEDNN_VERBOSE='1', ONEDNN_VERBOSE_TIMESTAMP='1')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-c', script], env=env, cwd=root, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # onednn_verbose,exec,cpu,convolution,...,<start ms> is field 1, the last field the duration
  spans = sorted((float(f[1]), float(f[1]) + float(f[-1])) for f in (
      line.split(',') for line in result.stdout.splitlines())
                 if f[0] == 'onednn_verbose' and f[2:5] == ['exec', 'cpu', 'convolution'])
  assert len(spans) == 10 * 6 * 3
  assert all(start >= end for (_, end), (start, _) in zip(spans, spans[1:])), spans
