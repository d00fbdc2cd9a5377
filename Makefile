# `make quickstart` and `make test` each set up .venv from requirements.txt first (once).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup quickstart test models

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

setup: $(VENV)/.installed

models: setup
	$(PY) -m cnn_jax.models

# Trains configs/quickstart.py on the embedded digits (~1-2 min on 2 CPU cores); running it again
# resumes (here: re-evaluates) the run in $(QUICKSTART_DIR). eval.py then reports its test error.
QUICKSTART_DIR ?= runs/quickstart
quickstart: setup
	$(PY) train.py --config=configs/quickstart.py --workdir=$(QUICKSTART_DIR)
	$(PY) eval.py --workdir=$(QUICKSTART_DIR)

# The whole suite, one test file per worker on every core (pytest-xdist); ~10-12 min on 2 CPU cores.
test: setup
	$(PY) -m pytest -q -ra -n auto --dist loadfile
