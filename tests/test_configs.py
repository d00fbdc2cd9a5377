"""Every recipe in configs/ parses and validates, and its runlocal variant traces one train and eval
step (`trainer.check`: abstract, no compilation); a few recipes also run one real step.

The trace shows that each recipe's optimizer, schedule, loss (label smoothing, aux heads), EMA and
model fit together. Compiling the tiny Inception/GoogLeNet/ENet variants costs 1-2 min each on 2 CPU
cores, so the real steps run on the cheap recipes, plus the Inception-v3 recipe (RMSProp, EMA,
exponential decay, label smoothing) on a ResNet; the aux-head loss runs in tests/test_tour.py.
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


def recipe(name):
  return load(next(p for p in CONFIGS if p.stem == name))


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
  config = recipe(name).get_config(arg)
  config_lib.validate(config)
  assert config.model.name in ('resnet18', 'resnet101', 'alexnet')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_runlocal_traces_a_train_and_eval_step(path):
  config = load(path).get_config('runlocal')
  assert models.get_info(config.model.name).tiny
  trainer.check(config)


def _run_one_step(config, workdir):
  config.num_train_steps = 1
  config.eval_every_steps = -1
  config.checkpoint_every_steps = -1
  assert trainer.train_and_evaluate(config, str(workdir)) == {}
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 1 and '"step": 1' in lines[0]
  assert np.isfinite(float(lines[0].split('"loss": ')[1].split(',')[0]))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['quickstart', 'alexnet', 'vgg16', 'resnet'])
def test_runlocal_runs_one_step(name, tmp_path):
  _run_one_step(recipe(name).get_config('runlocal'), tmp_path)


@pytest.mark.slow
def test_inception_v3_recipe_runs_one_step_on_a_resnet(tmp_path):
  config = recipe('inception_v3').get_config('runlocal')
  assert config.optimizer.name == 'rmsprop' and config.ema_decay > 0 and config.label_smoothing > 0
  config.model.name, config.model.kwargs, config.image_size = 'resnet_tiny', {}, 32
  _run_one_step(config, tmp_path)
