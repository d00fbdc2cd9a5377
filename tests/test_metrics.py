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
