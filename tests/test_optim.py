"""cnn_jax/optim.py against hand-computed numbers and PyTorch's SGD: schedules, plateau rule, weight
decay (masks, switch-off epoch, order with clipping) and TensorFlow's RMSProp.

Every expected value is written out here from the formula it comes from; none is read back from
optim.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnn_jax import config as config_lib, optim


def schedule_cfg(**fields):
  cfg = config_lib.base_config().schedule
  cfg.update(fields)
  return cfg


def opt_config(**optimizer):
  """A config with a constant schedule and the given optimizer fields (unless set: SGD without
  momentum, weight decay on all parameters)."""
  c = config_lib.base_config()
  c.optimizer.update(name='sgd', momentum=0.0, decay_mask='all')
  c.optimizer.update(optimizer)
  c.schedule.name = 'constant'
  return c


def lrs(schedule, steps):
  return [float(schedule(s)) for s in steps]


# ----------------------------------------------------------------------------- schedules
# Steps count optimizer updates already done: step s is the (s+1)-th update, and with 10 steps per
# epoch steps 0-9 are epoch 1 (epoch index 0).

def test_step_schedule_divides_at_the_epoch_boundaries():
  """lr 0.1 x0.1 at epochs 30 and 60 (He et al. 2016 §3.4 as torchvision's StepLR(30, 0.1)):
  epoch index 30 starts at step 300."""
  f = optim.make_schedule(schedule_cfg(name='step', factor=0.1, boundaries_epochs=(30.0, 60.0)),
                          0.1, 10, 900)
  np.testing.assert_allclose(lrs(f, [0, 299, 300, 599, 600, 899]),
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_exponential_schedule_is_a_staircase_in_epochs():
  """Szegedy et al. 2016 §8: 0.045 x0.94 every 2 epochs (20 steps): 0.045 * 0.94^floor(s / 20)."""
  f = optim.make_schedule(schedule_cfg(name='exponential', factor=0.94, decay_epochs=2.0),
                          0.045, 10, 1000)
  expected = [0.045, 0.045, 0.045 * 0.94, 0.045 * 0.94, 0.045 * 0.94 ** 2, 0.045 * 0.94 ** 5]
  # = [0.045, 0.045, 0.0423, 0.0423, 0.039762, 0.033025681]
  np.testing.assert_allclose(lrs(f, [0, 19, 20, 39, 40, 100]), expected, rtol=1e-6)
  np.testing.assert_allclose(expected[-1], 0.033025681, rtol=1e-8)


def test_warmup_cosine_schedule():
  """1 epoch (10 steps) of linear warmup from 0 to 0.1, then 0.1 * (1 + cos(pi t)) / 2 over the 100
  remaining steps: t = 25/100 at step 35 gives 0.05 * (1 + sqrt(2)/2) = 0.0853553."""
  f = optim.make_schedule(schedule_cfg(name='warmup_cosine', warmup_epochs=1.0), 0.1, 10, 110)
  np.testing.assert_allclose(lrs(f, [0, 5, 10, 35, 60, 110]),
                             [0.0, 0.05, 0.1, 0.0853553, 0.05, 0.0], rtol=1e-5, atol=1e-8)


def test_linear_schedule_reaches_zero_at_the_end():
  """Caffe's "poly" policy with power 1 (SqueezeNet's solver): 0.04 * (1 - s / 100)."""
  f = optim.make_schedule(schedule_cfg(name='linear'), 0.04, 10, 100)
  np.testing.assert_allclose(lrs(f, [0, 25, 50, 100]), [0.04, 0.03, 0.02, 0.0], atol=1e-8)


def test_plateau_divides_after_patience_evaluations_at_most_max_reductions_times():
  """Krizhevsky et al. 2012 §5: divide by 10 when the validation error stops improving, 3 times.
  patience=2: the second evaluation in a row without a relative improvement of rtol cuts the rate."""
  plateau = optim.make_plateau(schedule_cfg(name='plateau', factor=0.1, patience=2,
                                            max_reductions=3, rtol=1e-4))
  state = plateau.init({})
  scales = []
  errors = [0.5, 0.4, 0.39999, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
  for error in errors:
    _, state = plateau.update({}, state, value=jnp.asarray(error))
    scales.append(float(state.scale))
  # 0.39999 is not below 0.4 * (1 - 1e-4) = 0.39996: no improvement. Cuts after the 2nd stale eval,
  # the counter restarts; 0.3 improves; the 3rd cut is the last (min scale 0.1^3).
  expected = [1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001]
  np.testing.assert_allclose(scales, expected, rtol=1e-5)


def test_set_learning_rate_changes_the_next_update():
  """The plateau rule acts through the injected rate: SGD without momentum, gradient 1 -> -lr."""
  tx = optim.make_optimizer(opt_config(lr=0.01), 10, 100)
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  updates, state = tx.update({'w': jnp.ones(())}, state, params)
  np.testing.assert_allclose(updates['w'], -0.01, rtol=1e-6)
  state = optim.set_learning_rate(state, 0.001)
  updates, state = tx.update({'w': jnp.ones(())}, state, params)
  np.testing.assert_allclose(updates['w'], -0.001, rtol=1e-6)
  np.testing.assert_allclose(optim.learning_rate(state), 0.001, rtol=1e-6)


# ----------------------------------------------------------------------------- weight decay

class _Net(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.fc = nnx.Linear(4, 2, rngs=rngs)


def _ones_params():
  params = nnx.state(_Net(nnx.Rngs(0)), nnx.Param)
  return jax.tree.map(jnp.ones_like, params)


def _flat(tree):
  """{'conv/kernel': array, ...}"""
  return {'/'.join(str(k.key) for k in path if hasattr(k, 'key')): np.asarray(x)
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


ALL = {'conv/kernel', 'conv/bias', 'bn/scale', 'bn/bias', 'fc/kernel', 'fc/bias'}


@pytest.mark.parametrize('mask, decayed', [
    ('kernels', {'conv/kernel', 'fc/kernel'}),  # cuda-convnet wc, Caffe decay_mult, TF-slim
    ('all', ALL),  # PyTorch's and Torch's weight_decay
])
def test_decay_mask(mask, decayed):
  """SGD lr 1, no momentum, zero gradient, wd 0.5, weights 1: a decayed weight moves by -0.5."""
  params = _ones_params()
  tx = optim.make_optimizer(opt_config(lr=1.0, weight_decay=0.5, decay_mask=mask), 10, 100)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  flat = _flat(updates)
  assert set(flat) == ALL
  for name, value in flat.items():
    np.testing.assert_allclose(value, -0.5 if name in decayed else 0.0, err_msg=name)


def test_weight_decay_stops_at_weight_decay_until_epoch():
  """BN-NiN's regime (wd 5e-4 in epochs 1-19, 0 after): with until_epoch=2 and 10 steps per epoch,
  updates 1-20 decay, from update 21 on nothing does. SGD lr 1, wd 0.5, zero gradients, w0 = 1:
  w halves 20 times, then stays at 0.5^20."""
  tx = optim.make_optimizer(opt_config(lr=1.0, weight_decay=0.5, weight_decay_until_epoch=2.0),
                            10, 100)
  params = {'w': jnp.ones((2, 2))}
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for _ in range(22):
    updates, state = update({'w': jnp.zeros((2, 2))}, state, params)
    params = optax.apply_updates(params, updates)
    history.append(float(params['w'][0, 0]))
  np.testing.assert_allclose(history[18:], [0.5 ** 19, 0.5 ** 20, 0.5 ** 20, 0.5 ** 20], rtol=1e-6)


def test_clipping_includes_the_l2_term():
  """TF-slim adds weight decay to the loss, so the clipped gradient includes it (Szegedy et al. 2016
  §8 clips at 2.0): w = 3, g = 0, wd 1 -> gradient 3 -> clipped to 2 -> SGD lr 1 moves w by -2."""
  tx = optim.make_optimizer(opt_config(lr=1.0, weight_decay=1.0, grad_clip_norm=2.0), 10, 100)
  params = {'w': jnp.full((), 3.0)}
  updates, _ = tx.update({'w': jnp.zeros(())}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -2.0, rtol=1e-6)


# ----------------------------------------------------------------------------- optimizers

def test_sgd_matches_torch_sgd():
  """Momentum 0.9, Nesterov, coupled weight decay 1e-3, lr 0.1: five steps against torch.optim.SGD."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  w0 = rng.standard_normal((3, 4)).astype(np.float32)
  grads = rng.standard_normal((5, 3, 4)).astype(np.float32)
  for nesterov in (False, True):
    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.SGD([tw], lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    tx = optim.make_optimizer(opt_config(lr=0.1, momentum=0.9, weight_decay=1e-3,
                                         nesterov=nesterov), 10, 100)
    params = {'w': jnp.asarray(w0)}
    state = tx.init(params)
    for g in grads:
      tw.grad = torch.tensor(g)
      topt.step()
      updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
      params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_rmsprop_is_tensorflows():
  """tf.train.RMSPropOptimizer(decay 0.9, momentum 0.9, eps 1.0), mean square starting at 1:
  ms <- 0.9 ms + 0.1 g^2;  mom <- 0.9 mom + lr g / sqrt(ms + 1);  w <- w - mom.
  The rate is inside the momentum, so a rate cut between updates does not rescale the buffer.
  w0 = 1; update 1: g = 2, lr 0.1; update 2: g = 1, lr 0.01.
    ms1 = 0.9 + 0.4 = 1.3,   mom1 = 0.1 * 2 / sqrt(2.3) = 0.131876095,  w1 = 0.868123905
    ms2 = 1.17 + 0.1 = 1.27, mom2 = 0.9 * 0.131876095 + 0.01 / sqrt(2.27) = 0.125325723,
    w2 = 0.742798182"""
  tx = optim.make_optimizer(opt_config(name='rmsprop', lr=0.1, momentum=0.9, rmsprop_decay=0.9,
                                       eps=1.0), 10, 100)
  params = {'w': jnp.ones(())}
  state = tx.init(params)
  updates, state = tx.update({'w': jnp.full((), 2.0)}, state, params)
  params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params['w'], 0.868123905, rtol=1e-6)
  state = optim.set_learning_rate(state, 0.01)
  updates, state = tx.update({'w': jnp.ones(())}, state, params)
  params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params['w'], 0.742798182, rtol=1e-6)
  # the numbers above, from the formulas:
  mom1 = 0.1 * 2 / math.sqrt(2.3)
  assert math.isclose(1 - mom1 - (0.9 * mom1 + 0.01 / math.sqrt(2.27)), 0.742798182, rel_tol=1e-8)
