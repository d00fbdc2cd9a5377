"""The package is installed (`make setup` runs `pip install -e .`): it imports from any directory."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cnn_jax_imports_outside_the_repository(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  out = subprocess.run(
      [sys.executable, '-c', 'import cnn_jax.trainer, cnn_jax.load; print(cnn_jax.__file__)'],
      cwd=tmp_path, env={**env, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert Path(out.stdout.strip()).resolve() == REPO / 'cnn_jax' / '__init__.py'
