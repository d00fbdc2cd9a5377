"""The seams between the parts: no file reaches into another module's private names."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ('cnn_jax', 'tests', 'benchmarks', 'configs', 'train.py', 'eval.py')


def private_uses(path: Path, root: Path = REPO) -> list[str]:
  """`from m import _x` and `module._x` (module bound by an import) in one file."""
  tree = ast.parse(path.read_text(encoding='utf-8'))
  modules, found = set(), []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      for alias in node.names:
        modules.add(alias.asname or alias.name.split('.')[0])
        if isinstance(node, ast.ImportFrom) and alias.name.startswith('_') and not (
            alias.name.startswith('__')):
          found.append(f'{path.relative_to(root)}:{node.lineno} imports {alias.name}')
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr.startswith('_') and not (
        node.attr.startswith('__')):
      base = node.value
      while isinstance(base, ast.Attribute):
        base = base.value
      if isinstance(base, ast.Name) and base.id in modules:
        found.append(f'{path.relative_to(root)}:{node.lineno} uses {ast.unparse(node)}')
  return found


def test_the_checker_finds_private_uses(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('from cnn_jax import trainer\nfrom m import _hidden\nx = trainer._split(1)\n')
  assert private_uses(bad, tmp_path) == ['bad.py:2 imports _hidden', 'bad.py:3 uses trainer._split']


def test_no_file_uses_another_modules_private_names():
  files = [p for name in SOURCES for p in ((REPO / name).rglob('*.py') if (REPO / name).is_dir()
                                           else [REPO / name])]
  assert len(files) > 50
  assert [use for path in files for use in private_uses(path)] == []
