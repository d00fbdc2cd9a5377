"""docs/tour.md experiments: every variant builds a valid config and model; one experiment runs end to
end in smoke mode (a few trainer steps on digits per variant) and writes its table and figure."""

import pytest
from PIL import Image

from cnn_jax import config as config_lib
from cnn_jax.models import stats
from cnn_jax.tools import tour

ALL_VARIANTS = [(name, v) for name, exp in tour.EXPERIMENTS.items() for v in exp.variants]


@pytest.mark.parametrize('name,variant', ALL_VARIANTS, ids=[f'{n}-{v.label}' for n, v in ALL_VARIANTS])
def test_every_variant_is_a_valid_config_and_model(name, variant):
  exp = tour.EXPERIMENTS[name]
  c = tour.make_config(exp, variant, seed=0, steps=exp.steps, dataset=exp.dataset)
  config_lib.validate(c)
  model = stats.abstract_model(c.model.name, 10, **c.model.kwargs)
  # The forward pass traces at the experiment's resolution (abstractly: no compilation).
  assert stats.count_macs(model, c.image_size) > 0


@pytest.mark.slow
def test_smoke_run_writes_table_and_figure(tmp_path):
  name = 'label_smoothing_aux'  # 3 variants: plain, a config override, a model switch + override
  rows = tour.run(name, str(tmp_path), smoke=True)
  exp = tour.EXPERIMENTS[name]
  assert [r['variant'] for r in rows] == [v.label for v in exp.variants]
  for r in rows:
    assert r['params'] > 0 and len(r['test_errors']) == 1 and 0.0 <= r['test_errors'][0] <= 1.0
  table = (tmp_path / f'tour_{name}.md').read_text()
  # header, separator, one row per variant
  assert sum(line.startswith('| ') for line in table.splitlines()) == 2 + len(exp.variants)
  with Image.open(tmp_path / f'tour_{name}.png') as image:
    assert image.size == (900, 342)


def test_stacked_3x3_has_fewer_parameters_than_5x5():
  count = lambda k: stats.count_params(stats.abstract_model('tour_cnn', 10, kernels=k))
  # VGG §2.3: the same receptive field with fewer weights (27 C^2 against 50 C^2 per stage here).
  assert count('stacked') < count('large')


def test_config_overrides_reach_the_trainer_config():
  exp = tour.EXPERIMENTS['batch_norm']
  c = tour.make_config(exp, exp.variants[3], seed=1, steps=10, dataset='digits')
  assert c.optimizer.lr == 0.2 and c.model.kwargs.batch_norm is True and c.seed == 1
