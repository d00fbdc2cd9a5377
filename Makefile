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

quickstart: models

test: setup
	$(PY) -m pytest -q -ra
