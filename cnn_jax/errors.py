"""Mistakes a user can fix, reported by the command-line tools as one line instead of a traceback.

`run(main)` replaces `absl.app.run(main)` in train.py, eval.py, `python -m cnn_jax.convert` and
`python -m cnn_jax.data.prepare`: a user error -- a `UserError`, an `OSError` (a missing file, a
workdir that is a file), or a ValueError/TypeError/KeyError/ImportError raised by the checks of this
package -- is printed as `error: <message>` on stderr with exit code 2; `--verbose` shows the
traceback. Errors of the flags themselves (a config file that does not exist, an unknown
`--config.key`, which is answered with the nearest valid keys) are reported the same way. Any other
exception (a bug: raised inside a library) keeps its traceback. Ctrl-C exits with code 130.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import traceback

from absl import app, flags
from ml_collections.config_flags import config_flags  # is_config_flag is not re-exported

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# Names people type for a config field that has another name here (matched approximately too).
KEY_ALIASES = {'learning_rate': 'optimizer.lr', 'epochs': 'num_epochs', 'steps': 'num_train_steps',
               'dataset': 'data.name', 'model_name': 'model.name'}

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CHECKED_TYPES = (ValueError, TypeError, KeyError, ImportError)


class UserError(Exception):
  """A mistake in the command, config or data; the message names it and the fix."""


class DataError(UserError, ValueError):
  """The dataset cannot be used as asked: an empty split, labels >= num_classes, unreadable images."""


def is_user_error(error: BaseException) -> bool:
  """A UserError or OSError, or one of ValueError/TypeError/KeyError/ImportError raised by a check
  in this package (not inside a library, where it would be a bug to debug)."""
  if isinstance(error, (UserError, OSError)):
    return True
  if not isinstance(error, _CHECKED_TYPES) or error.__traceback__ is None:
    return False
  raised_in = traceback.extract_tb(error.__traceback__)[-1].filename
  return os.path.abspath(raised_in).startswith(_PACKAGE + os.sep)


def message(error: BaseException) -> str:
  """The error's text on one line (a KeyError's without the quotes repr adds)."""
  text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  return ' '.join(line.strip() for line in str(text).splitlines() if line.strip()) or repr(error)


def _fail(text: str, code: int = EXIT_USER_ERROR):
  """Print `error: text` as the last line (later log records, e.g. of read threads, are dropped)."""
  logging.disable(logging.CRITICAL)
  sys.stdout.flush()
  print(f'error: {text}', file=sys.stderr, flush=True)
  sys.exit(code)


def _leaf_paths(config, prefix=''):
  """The dotted keys of a ConfigDict's values ('optimizer.lr', ...; not 'optimizer' itself)."""
  for key, value in config.items():
    if hasattr(value, 'items') and value:
      yield from _leaf_paths(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def nearest_keys(config, path: str, n: int = 2) -> list[str]:
  """The dotted keys of `config` closest to the unknown `path`: by the whole path, by its last part
  (`lr` -> `optimizer.lr`) and through KEY_ALIASES (`lernrate` -> `learning_rate` -> `optimizer.lr`)."""
  paths = list(_leaf_paths(config))
  candidates = {**{p.rsplit('.', 1)[-1]: p for p in reversed(paths)}, **{p: p for p in paths},
                **{a: p for a, p in KEY_ALIASES.items() if p in paths}}
  found = []
  for query in (path, path.rsplit('.', 1)[-1]):
    for match in difflib.get_close_matches(query, list(candidates), n=n, cutoff=0.6):
      if candidates[match] not in found:
        found.append(candidates[match])
  return found[:n]


def _unknown_override(flag_name: str, argv: list[str]) -> str | None:
  """The message for the first `--<flag_name>.key` override in argv that the config lacks, or None."""
  flag, spec = flags.FLAGS[flag_name], None
  for i, arg in enumerate(argv):  # --config=FILE or --config FILE
    if arg.startswith(f'--{flag_name}='):
      spec = arg.split('=', 1)[1]
    elif arg == f'--{flag_name}' and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    return None
  config = flag.parser.parse(spec)  # the file parses: the error came from an override
  prefix = f'--{flag_name}.'
  for arg in argv:
    if not arg.startswith(prefix):
      continue
    path = arg[len(prefix):].split('=', 1)[0]
    node = config
    for part in path.split('.'):
      if not hasattr(node, 'keys') or part not in node.keys():
        near = nearest_keys(config, path)
        hint = (f'did you mean {" or ".join(prefix + k for k in near)}?' if near
                else f'valid top-level keys: {", ".join(sorted(config.keys()))}')
        return f'unknown config key {path!r} in {arg.split("=", 1)[0]}; {hint}'
      node = node[part]
  return None


def _check_config_files():
  """A config flag whose file could not be loaded (ml_collections defers that error to first use)."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if not config_flags.is_config_flag(flag) or flag.value is None:
      continue
    try:
      flag.value.keys()
    except OSError as e:
      path = config_flags.get_config_filename(flag)
      if not os.path.isfile(path):
        _fail(f'config file {path} not found (--{name}; relative paths start at {os.getcwd()}); '
              'pass a recipe such as --config=configs/quickstart.py')
      _fail(f'cannot load the config file {path} (--{name}): {message(e)}')


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with flag and config-file errors as one line (see the module docstring)."""
  verbose = '--verbose' in argv
  try:
    args = flags.FLAGS(argv)
  except flags.Error as e:
    if verbose:
      raise
    text = message(e)
    if 'Error whilst parsing config file' in str(e):  # get_config raised: keep its last line
      text = f'{str(e).split(":", 1)[0]}: {str(e).strip().splitlines()[-1]}'
    _fail(text)
  except (AttributeError, KeyError):
    names = [n for n in list(flags.FLAGS) if config_flags.is_config_flag(flags.FLAGS[n])]
    text = next(filter(None, (_unknown_override(n, argv) for n in names)), None)
    if text is None or verbose:
      raise
    _fail(text)
  if not verbose:
    _check_config_files()
  return args


def run(main) -> None:
  """`absl.app.run(main)` with user errors as one line `error: ...` and exit code 2 (see above)."""
  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'Show the traceback of an error, not just its message.')

  def guarded(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      _fail('interrupted (Ctrl-C)', EXIT_INTERRUPTED)
    except Exception as e:  # pylint: disable=broad-except
      if flags.FLAGS.verbose or not is_user_error(e):
        raise
      _fail(message(e))

  app.run(guarded, flags_parser=parse_flags)
