"""layers.BatchNorm (kernels.batch_norm, kernels.portable_batch_norm) against torch.nn.BatchNorm2d/1d + ReLU/ReLU6 run here:
training-mode output, gradients of the input, scale and bias, and the running statistics after
one step (PyTorch updates the running variance with the unbiased batch variance, as Ioffe &
Szegedy 2015, Algorithm 2 does); eval-mode output; float32 and bfloat16 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import kernels
from cnn_jax.models import layers

torch = pytest.importorskip('torch')

SHAPES = [(4, 7, 5, 6), (1, 3, 3, 8), (16, 3)]  # odd spatial sizes, batch 1, BN after an FC layer
TORCH_ACTIVATION = {None: lambda y: y, 'relu': torch.relu, 'relu6': torch.nn.functional.relu6}


def _torch_reference(x, dy, scale, bias, mean, var, eps, activation, residual=None):
  """y, dx, dscale, dbias, the running mean/var of torch's BatchNorm (momentum 0.1) + act, and
  with a residual act(BN(x) + residual), the residual's gradient."""
  features = x.shape[-1]
  bn = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(features, eps=eps)
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(scale)); bn.bias.copy_(torch.from_numpy(bias))
    bn.running_mean.copy_(torch.from_numpy(mean)); bn.running_var.copy_(torch.from_numpy(var))
  to_torch = (lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)) if x.ndim == 4 else torch.from_numpy
  from_torch = (lambda t: t.permute(0, 2, 3, 1).numpy()) if x.ndim == 4 else (lambda t: t.numpy())
  tx = to_torch(x.astype(np.float64)).requires_grad_()
  bn = bn.double()
  if residual is None:
    y = TORCH_ACTIVATION[activation](bn(tx))
  else:
    tr = to_torch(residual.astype(np.float64)).requires_grad_()
    y = TORCH_ACTIVATION[activation](bn(tx) + tr)
  y.backward(to_torch(dy.astype(np.float64)))
  extra = () if residual is None else (from_torch(tr.grad),)
  return (from_torch(y.detach()), from_torch(tx.grad), bn.weight.grad.numpy(),
          bn.bias.grad.numpy(), bn.running_mean.numpy(), bn.running_var.numpy(), *extra)


# (shape, activation, residual): every activation on every shape; a residual (ResNet adds its
# shortcut before a ReLU) on images.
CASES = ([(shape, act, False) for shape in SHAPES for act in kernels.ACTIVATIONS]
         + [(shape, 'relu', True) for shape in SHAPES if len(shape) == 4])


@pytest.mark.parametrize('shape,activation,residual', CASES)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('path', ['kernels', 'portable'])
def test_training_step_equals_torch(shape, activation, residual, dtype, path, monkeypatch):
  """On this CPU `kernels.batch_norm` runs the C++ passes where they are built; the portable
  `jnp` path is what GPUs run. With a residual: act(BN(x) + r), ResNet's block end."""
  if path == 'portable':
    monkeypatch.setattr(kernels, 'batch_norm', kernels.portable_batch_norm)
  rng = np.random.default_rng(sum(shape))
  c = shape[-1]
  x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)  # mean far from 0
  x = np.asarray(jnp.asarray(x, dtype).astype(jnp.float32))  # the values the layer sees
  dy = rng.standard_normal(shape).astype(np.float32)
  scale, bias = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(size=c).astype(np.float32)
  mean, var = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
  eps = 1e-3
  bn = layers.batch_norm(c, eps=eps, dtype=dtype, rngs=nnx.Rngs(0))
  bn.scale[...], bn.bias[...] = jnp.asarray(scale), jnp.asarray(bias)
  bn.mean[...], bn.var[...] = jnp.asarray(mean), jnp.asarray(var)

  r = (np.asarray(jnp.asarray(rng.standard_normal(shape), dtype).astype(jnp.float32))
       if residual else None)

  def loss(bn, x, r):
    y = bn(x.astype(dtype), use_running_average=False, activation=activation,
           residual=None if r is None else r.astype(dtype))
    return jnp.sum(y.astype(jnp.float32) * dy), y

  (_, y), (dbn, dx, dr) = nnx.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
      bn, jnp.asarray(x), None if r is None else jnp.asarray(r))
  got = (y, dx, dbn.scale[...], dbn.bias[...], bn.mean[...], bn.var[...], *([dr] * residual))
  want = _torch_reference(x, dy, scale, bias, mean, var, eps, activation, r)
  names = ('y', 'dx', 'dscale', 'dbias', 'running_mean', 'running_var', 'dresidual')
  tol = 1e-5 if dtype == jnp.float32 else 2e-2  # bf16 rounds y and dx to 8 bits
  for name, a, b in zip(names, got, want):
    b = b.astype(np.float32)
    t = tol if name in ('y', 'dx', 'dresidual') else 1e-5  # statistics and parameter gradients are float32
    if name in ('dscale', 'dbias') and dtype == jnp.bfloat16:
      t = 2e-2  # sums of the bf16 y's rounding
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=t,
                               atol=t * max(1.0, float(np.max(np.abs(b)))), err_msg=name)


@pytest.mark.parametrize('activation', kernels.ACTIVATIONS)
def test_eval_mode_equals_torch(activation):
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
  bn = layers.batch_norm(6, rngs=nnx.Rngs(0))
  bn.mean[...] = jnp.asarray(rng.normal(size=6), jnp.float32)
  bn.var[...] = jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32)
  tbn = torch.nn.BatchNorm2d(6).eval()
  with torch.no_grad():
    tbn.running_mean.copy_(torch.tensor(np.asarray(bn.mean[...])))
    tbn.running_var.copy_(torch.tensor(np.asarray(bn.var[...])))
    want = TORCH_ACTIVATION[activation](tbn(torch.from_numpy(x).permute(0, 3, 1, 2)))
  got = bn(jnp.asarray(x), use_running_average=True, activation=activation)
  np.testing.assert_allclose(np.asarray(got), want.permute(0, 2, 3, 1).numpy(), rtol=1e-5,
                             atol=1e-5)


def test_unknown_activation_is_refused():
  with pytest.raises(ValueError, match='activation must be one of'):
    kernels.batch_norm(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(3), epsilon=1e-5,
                       activation='gelu')


def test_forced_host_devices_synchronise_the_statistics(run_on_host_devices):
  """With 2 forced host devices and the batch sharded, each device runs the passes on its half and
  the sums are added across devices: values and gradients equal the portable path on one array."""
  run_on_host_devices('''
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from cnn_jax import kernels
      mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      rng = np.random.default_rng(0)
      x = (5 + rng.standard_normal((8, 5, 3, 16))).astype(np.float32)
      x[:4] += 3  # the two halves have different statistics
      scale, bias = rng.uniform(0.5, 1.5, 16).astype(np.float32), rng.normal(size=16).astype(np.float32)
      dy = rng.standard_normal(x.shape).astype(np.float32)

      def grad(f):
        def loss(x, scale, bias):
          y, mean, var = f(x, scale, bias, epsilon=1e-5, activation='relu')
          return jnp.sum(y * dy), (mean, var)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

      want = grad(kernels.portable_batch_norm)(x, scale, bias)
      with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P('data')))
        hlo = grad(kernels.batch_norm).lower(xs, scale, bias).compile().as_text()
        assert 'all-gather' not in hlo, hlo
        assert 'custom_call_target="cnn_jax_batch_norm_sums"' in hlo, hlo
        got = grad(kernels.batch_norm)(xs, scale, bias)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
      print('OK')
  ''')
