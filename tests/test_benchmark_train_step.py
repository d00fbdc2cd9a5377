"""benchmarks/train_step.py's timing: jax's and torch's steps taken in turn, the ratio's spread."""

import pytest

from benchmarks import train_step


def test_paired_steps_calls_the_runs_in_turn_after_one_warm_up_each():
  calls = []
  times = train_step.paired_steps(lambda: calls.append('jax'), lambda: calls.append('torch'),
                                  steps=3)
  assert calls == ['jax', 'torch'] * 4  # warm-up round, then 3 timed rounds
  assert [len(t) for t in times] == [3, 3]


def test_round_ratios_are_the_quartiles_of_each_rounds_torch_over_jax():
  # Hand calculation: rounds' torch / jax = 1, 0.5, 2, 1, 0.5 -> sorted 0.5, 0.5, 1, 1, 2;
  # inclusive quartiles sit on the 2nd and 4th values: 0.5 and 1.
  assert train_step.round_ratios([1, 2, 1, 1, 2], [1, 1, 2, 1, 1]) == pytest.approx((0.5, 1.0))
  assert train_step.round_ratios([2.0], [3.0]) == pytest.approx((1.5, 1.5))
