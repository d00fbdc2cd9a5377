"""Every recipe in configs/ parses, validates, and runs one training step of its runlocal variant.

One step, no evaluation, no checkpoint: the test is that each recipe's optimizer, schedule, loss
(label smoothing, aux heads), EMA and model build and run together. Tiny models, digits data.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cnn_jax import config as config_lib, models, trainer

CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_recipes():
  assert {'alexnet', 'vgg16', 'vgg19', 'nin', 'bn_nin', 'googlenet', 'inception_v3', 'resnet',
          'quickstart'} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_full_recipe_is_valid_and_documented(path):
  module = load(path)
  doc = module.__doc__
  assert 'python train.py --config=configs/' in doc and 'Expected' in doc, path
  config = module.get_config()
  config_lib.validate(config)
  assert config.model.name in models.list_models(include_tiny=False) or path.stem == 'quickstart'
  with pytest.raises(ValueError, match='unknown config argument'):
    module.get_config('no_such_argument=1')


@pytest.mark.parametrize('arg', ['depth=18', 'depth=101,variant=cosine', 'variant=torchvision'])
def test_recipe_arguments(arg):
  name = 'alexnet' if 'torchvision' in arg else 'resnet'
  config = load(CONFIGS[[p.stem for p in CONFIGS].index(name)]).get_config(arg)
  config_lib.validate(config)
  assert config.model.name in ('resnet18', 'resnet101', 'alexnet')


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_runlocal_runs_one_step(path, tmp_path):
  config = load(path).get_config('runlocal')
  assert models.get_info(config.model.name).tiny
  config.num_train_steps = 1
  config.eval_every_steps = -1
  config.checkpoint_every_steps = -1
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert metrics == {}
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 1 and '"step": 1' in lines[0]
  assert np.isfinite(float(lines[0].split('"loss": ')[1].split(',')[0]))
