"""Every recipe in configs/ parses and validates, states no base_config default again, and its
runlocal variant traces one train and eval step (`trainer.check`: abstract, no compilation); a few
recipes also run one real step. A config that leaves a required field unset fails `validate`,
naming the field.

The trace shows that each recipe's optimizer, schedule, loss (label smoothing, aux heads), EMA and
model fit together. Compiling the tiny Inception/GoogLeNet/ENet variants costs 1-2 min each on 2 CPU
cores, so the real steps run on the cheap recipes, plus the Inception-v3 recipe (RMSProp, EMA,
exponential decay, label smoothing) on a ResNet; the aux-head loss runs in tests/test_tour.py.
"""

import ast
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
  assert {'alexnet', 'vgg', 'nin', 'bn_nin', 'googlenet', 'inception_v3', 'resnet',
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


@pytest.mark.parametrize('name, arg, model', [
    ('resnet', 'depth=18', 'resnet18'), ('resnet', 'depth=101,variant=cosine', 'resnet101'),
    ('alexnet', 'variant=torchvision', 'alexnet'), ('vgg', None, 'vgg16'),
    ('vgg', 'depth=19', 'vgg19'), ('squeezenet', 'version=1_1', 'squeezenet1_1')])
def test_recipe_arguments(name, arg, model):
  config = recipe(name).get_config(arg)
  config_lib.validate(config)
  assert config.model.name == model


def test_a_depth_the_recipe_does_not_train_fails_with_the_valid_ones():
  with pytest.raises(ValueError, match=r'depth=13: .*\(16, 19\).*:depth=16 or :depth=19'):
    recipe('vgg').get_config('depth=13')


def assignments(path):
  """(line, 'a.b', value) for each `c.a.b = <literal>` in the recipe's get_config, in every branch
  (runlocal included); values that are not literals (f-strings, conditionals) are left out."""
  tree = ast.parse(path.read_text())
  get_config = next(n for n in tree.body
                    if isinstance(n, ast.FunctionDef) and n.name == 'get_config')
  for node in ast.walk(get_config):
    if not isinstance(node, ast.Assign):
      continue
    for target in node.targets:
      keys = []
      while isinstance(target, ast.Attribute):
        keys.insert(0, target.attr)
        target = target.value
      if isinstance(target, ast.Name) and target.id == 'c' and keys:
        try:
          yield node.lineno, '.'.join(keys), ast.literal_eval(node.value)
        except ValueError:
          pass


def default(path):
  node = config_lib.base_config()
  for key in path.split('.'):
    if key not in node:
      return KeyError  # not a base field (model.kwargs.*): validate checks those
    node = node[key]
  return node


def test_assignments_finds_what_it_looks_for():
  resnet = next(p for p in CONFIGS if p.stem == 'resnet')
  found = {(key, value) for _, key, value in assignments(resnet)}
  assert {('optimizer.lr', 0.1), ('schedule.boundaries_epochs', (30.0, 60.0)),
          ('label_smoothing', 0.1)} <= found


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_recipe_states_no_base_default_again(path):
  """A recipe states its paper's numbers; one equal to base_config's default says nothing."""
  restated = [f'line {line}: c.{key} = {value!r}' for line, key, value in assignments(path)
              if default(key) is not KeyError and default(key) == value]
  assert not restated, f'{path.name} restates base_config defaults: {restated}'


UNSET = [(field, 'resnet') for field in config_lib.REQUIRED] + [
    ('num_epochs', 'resnet'), ('optimizer.decay_mask', 'resnet'),
    ('schedule.boundaries_epochs', 'resnet'), ('schedule.factor', 'resnet'),
    ('optimizer.rmsprop_decay', 'inception_v3'), ('optimizer.eps', 'inception_v3'),
    ('schedule.decay_epochs', 'inception_v3'), ('schedule.patience', 'vgg'),
    ('schedule.max_reductions', 'vgg')]


@pytest.mark.parametrize('field, name', UNSET, ids=[field for field, _ in UNSET])
def test_a_required_field_left_unset_fails_validate_naming_it(field, name):
  """The recipe's config with `field` reset to base_config's (unset) value."""
  config = recipe(name).get_config()
  parent, _, key = field.rpartition('.')
  (config[parent] if parent else config)[key] = default(field)
  with pytest.raises(ValueError, match=rf'^config\.{field} is not set: .*; set --config\.{field} '
                     r'\(see configs/\w+\.py\)$'):
    config_lib.validate(config)


def test_num_train_steps_makes_num_epochs_optional():
  config = recipe('resnet').get_config()
  config.num_epochs, config.num_train_steps = None, 10
  config_lib.validate(config)


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
@pytest.mark.parametrize('name', ['quickstart', 'alexnet', 'vgg', 'resnet'])
def test_runlocal_runs_one_step(name, tmp_path):
  _run_one_step(recipe(name).get_config('runlocal'), tmp_path)


@pytest.mark.slow
def test_inception_v3_recipe_runs_one_step_on_a_resnet(tmp_path):
  config = recipe('inception_v3').get_config('runlocal')
  assert config.optimizer.name == 'rmsprop' and config.ema_decay > 0 and config.label_smoothing > 0
  config.model.name, config.model.kwargs, config.image_size = 'resnet_tiny', {}, 32
  _run_one_step(config, tmp_path)
