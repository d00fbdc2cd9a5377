"""docs/tour.md experiments: each runs end to end in smoke mode (a few steps on digits)."""

import os

import pytest
from PIL import Image

from cnn_jax.tools import tour


@pytest.mark.slow
@pytest.mark.parametrize('name', list(tour.EXPERIMENTS))
def test_experiment_smoke_run_writes_table_and_figure(name, tmp_path):
  rows = tour.run(name, str(tmp_path), smoke=True)
  exp = tour.EXPERIMENTS[name]
  assert [r['variant'] for r in rows] == [v.label for v in exp.variants]
  for r in rows:
    assert r['params'] > 0 and len(r['test_errors']) == 1 and 0.0 <= r['test_errors'][0] <= 1.0
  table = (tmp_path / f'tour_{name}.md').read_text()
  assert sum(line.startswith('| ') for line in table.splitlines()) == 1 + len(exp.variants)
  with Image.open(tmp_path / f'tour_{name}.png') as image:
    assert image.size == (900, 342)


def test_stacked_3x3_has_fewer_parameters_than_5x5():
  from cnn_jax.models import stats
  count = lambda k: stats.count_params(stats.abstract_model('tour_cnn', 10, kernels=k))
  # VGG §2.3: the same receptive field with fewer weights (27 C^2 against 50 C^2 per stage here).
  assert count('stacked') < count('large')


def test_config_overrides_reach_the_trainer_config():
  exp = tour.EXPERIMENTS['batch_norm']
  c = tour.make_config(exp, exp.variants[3], seed=1, steps=10, dataset='digits')
  assert c.optimizer.lr == 0.2 and c.model.kwargs.batch_norm is True and c.seed == 1
