"""`metrics.correct`, `cross_entropy` and `summarise` against counts and losses worked out by hand
(milliseconds)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import metrics


def test_correct_counts_top1_and_top5_of_the_masked_examples():
  # 6 classes. Row 0: the label (2) has the largest logit: a top-1 and top-5 hit. Row 1: the label
  # (0) is third largest: top-5 only. Row 2: the label (5) is the smallest of 6: neither. Row 3: a
  # top-1 hit, but masked out (padding). Top-1 = 1, top-5 = 2.
  logits = jnp.array([[0.1, 0.2, 0.9, 0.3, 0.0, -1.0],
                      [0.5, 0.1, 0.0, 0.7, 0.9, 0.2],
                      [0.3, 0.2, 0.1, 0.4, 0.5, -0.1],
                      [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([2, 0, 5, 1])
  top1, top5 = metrics.correct(logits, labels, jnp.array([True, True, True, False]))
  assert (float(top1), float(top5)) == (1.0, 2.0)
  top1, top5 = metrics.correct(logits, labels, jnp.ones(4, bool))
  assert (float(top1), float(top5)) == (2.0, 3.0)


def test_correct_with_fewer_than_five_classes_counts_every_example_in_the_top5():
  # 3 classes: the "top 5" is every class, so each unmasked example is a top-5 hit; row 0's label has
  # the largest logit, row 1's the smallest.
  logits = jnp.array([[0.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
  top1, top5 = metrics.correct(logits, jnp.array([1, 2, 0]), jnp.array([True, True, False]))
  assert (float(top1), float(top5)) == (1.0, 2.0)


def test_correct_breaks_ties_towards_the_lower_class_index():
  """jax.lax.top_k's documented order: of equal elements the lower index comes first."""
  logits = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
  top1, _ = metrics.correct(logits, jnp.array([0, 1]), jnp.ones(2, bool))
  assert float(top1) == 1.0  # row 0 (label 0) is a hit, row 1 (label 1) is not


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_cross_entropy_with_label_smoothing_by_hand(smoothing):
  """Szegedy et al. 2016 §7: targets q'(k) = (1 - eps) [k = y] + eps / K. Logits (1, 2, 3), label 0:
  log-sum-exp = 3 + log(1 + e^-1 + e^-2) = 3.40760596, so -log p = (2.40760596, 1.40760596,
  0.40760596) and the loss is (1 - eps + eps/3) 2.40760596 + eps/3 (1.40760596 + 0.40760596):
  2.40760596 without smoothing, 2.30760596 with eps = 0.1."""
  lse = 3 + math.log(1 + math.exp(-1) + math.exp(-2))
  neg_log_p = np.array([lse - 1, lse - 2, lse - 3])
  targets = np.array([1 - smoothing + smoothing / 3, smoothing / 3, smoothing / 3])
  expected = float(targets @ neg_log_p)
  assert expected == pytest.approx({0.0: 2.40760596, 0.1: 2.30760596}[smoothing], abs=1e-8)
  logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], jnp.bfloat16)  # computed in float32
  loss = metrics.cross_entropy(logits, jnp.array([0, 2]), smoothing)
  assert loss.dtype == jnp.float32 and loss.shape == (2,)
  assert float(loss[0]) == pytest.approx(expected, rel=1e-6)
  # Row 1, label 2: (1 - eps + eps/3) 0.40760596 + eps/3 (2.40760596 + 1.40760596).
  assert float(loss[1]) == pytest.approx(
      (1 - smoothing + smoothing / 3) * (lse - 3) + smoothing / 3 * (2 * lse - 3), rel=1e-6)


def test_summarise_divides_the_sums_by_the_count():
  out = metrics.summarise({'loss': 6.0, 'top1': 3.0, 'top5': 4.0, 'count': 4.0})
  assert out == {'loss': 1.5, 'top1': 0.75, 'top5': 1.0, 'top1_error': 0.25, 'top5_error': 0.0}
  assert metrics.summarise({'loss': 0.0, 'top1': 0.0, 'top5': 0.0, 'count': 0.0})['top1'] == 0.0


def test_a_metric_added_in_metrics_py_reaches_the_train_and_eval_steps(monkeypatch):
  """The seam: a new metric (here top-2 hits) is defined in metrics.zeros / accumulate only, and
  the trainer's train and eval steps carry it, counted as numpy counts it from the same logits."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from cnn_jax import config as config_lib, trainer  # pylint: disable=g-import-not-at-top

  zeros, accumulate = metrics.zeros, metrics.accumulate

  def accumulate_top2(sums, logits, labels, mask, loss=None):
    top2 = jnp.sum(jnp.any(jax.lax.top_k(logits, 2)[1] == labels[:, None], axis=-1) * mask)
    return {**accumulate(sums, logits, labels, mask, loss), 'top2': sums['top2'] + top2}

  monkeypatch.setattr(metrics, 'zeros', lambda: {**zeros(), 'top2': jnp.zeros(())})
  monkeypatch.setattr(metrics, 'accumulate', accumulate_top2)
  config = config_lib.base_config()
  config.model.name = 'tour_cnn'
  tx = optax.sgd(0.1)
  state = trainer.create_train_state(config, 10, tx)
  graphdef, _, rng_state, _ = trainer.split_model(trainer.build_model(config, 10))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.standard_normal((6, 32, 32, 3)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 10, 6), jnp.int32),
           'mask': jnp.asarray([True] * 5 + [False])}
  sums = trainer.eval_step(state, metrics.zeros(), batch, graphdef=graphdef, rng_state=rng_state)
  model = nnx.merge(graphdef, state['params'], rng_state, state['model_state'])
  logits = np.asarray(model(batch['image'], train=False))
  labels, mask = np.asarray(batch['label']), np.asarray(batch['mask'])
  in_top2 = [label in np.argsort(-row)[:2] for row, label in zip(logits, labels)]
  assert float(sums['top2']) == sum(h for h, m in zip(in_top2, mask) if m)
  log_probs = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
  want_loss = -sum(log_probs[i, labels[i]] for i in range(6) if mask[i])
  np.testing.assert_allclose(float(sums['loss']), want_loss, rtol=1e-5)
  _, acc = trainer.train_step(state, metrics.zeros(), batch, graphdef=graphdef,
                              rng_state=rng_state, config=config, tx=tx)
  assert 'top2' in acc and 0 <= float(acc['top2']) <= 5
