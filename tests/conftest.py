"""Shared pytest set-up. Tests needing several devices run in subprocesses (see tests/helpers.py)."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
