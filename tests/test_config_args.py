"""`config.parse_arg`: the `--config=recipe.py:key=value,...` argument of every recipe (milliseconds)."""

import pytest

from cnn_jax import config as config_lib


def test_no_argument_gives_the_defaults_and_runlocal_false():
  for arg in (None, ''):
    assert config_lib.parse_arg(arg, depth=50).to_dict() == {'runlocal': False, 'depth': 50}


def test_values_are_python_literals():
  args = config_lib.parse_arg('depth=101,lr=0.5,aux=False,scale=None', depth=50, lr=0.1, aux=True,
                              scale=None)
  assert args.to_dict() == {'runlocal': False, 'depth': 101, 'lr': 0.5, 'aux': False, 'scale': None}
  assert type(args.depth) is int and type(args.lr) is float  # pylint: disable=unidiomatic-typecheck


def test_a_bare_key_is_true():
  assert config_lib.parse_arg('runlocal').runlocal is True
  assert config_lib.parse_arg('aux,runlocal', aux=False).to_dict() == {'runlocal': True, 'aux': True}


def test_strings_stay_strings():
  """A value that is no literal is its text; a key with a str default keeps the text even where it
  would parse ('1_1' is also the int literal 11: squeezenet.py's version=1_1)."""
  assert config_lib.parse_arg('variant=bn', variant='plain').variant == 'bn'
  assert config_lib.parse_arg('version=1_1', version='1_0').version == '1_1'
  assert config_lib.parse_arg('name=x', name=None).name == 'x'  # None default: anything goes


def test_a_value_of_the_wrong_type_is_refused():
  with pytest.raises(ValueError, match=r"depth='abc'.*int"):
    config_lib.parse_arg('depth=abc', depth=50)


def test_an_unknown_key_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown config argument 'dpeth'.*valid: \['depth', "
                                       r"'runlocal'\]"):
    config_lib.parse_arg('dpeth=50', depth=50)
