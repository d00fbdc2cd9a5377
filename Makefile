# `make quickstart` and `make test` each set up .venv from requirements.txt first (once).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-gpu quickstart test test-fast models kernels

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .  # cnn_jax importable from any directory (pyproject.toml)
	touch $@

setup: $(VENV)/.installed kernels

# A GPU machine: jax with its CUDA plugin (requirements-gpu.txt) and torch/torchvision for
# benchmarks/train_step.py's comparison, in $(VENV); then `make test` and the benchmark run as here.
setup-gpu:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-gpu.txt -r requirements-torch.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
	touch $(VENV)/.installed

# oneDNN convolutions, max pooling and bfloat16 dense matmuls, and BatchNorm's passes, for CPU
# (cnn_jax/kernels): compiled against the onednn wheels that requirements.txt installs into $(VENV)
# and jaxlib's XLA FFI headers. If it cannot be built, every convolution, pooling and dense layer
# stays XLA's (and tests/test_kernels*.py skip).
KERNELS := cnn_jax/kernels/libonednn_conv.so
VENV_DIR = $(abspath $(VENV))
kernels: $(VENV)/.installed
	@$(MAKE) --no-print-directory $(KERNELS) || echo "make kernels: could not build $(KERNELS)" \
	  "(needs g++ and the onednn wheels of requirements.txt, x86-64 Linux);" \
	  "convolutions, pooling and dense layers stay XLA's."

$(KERNELS): cnn_jax/kernels/onednn_conv.cc cnn_jax/kernels/onednn_pool.cc \
  cnn_jax/kernels/onednn_matmul.cc cnn_jax/kernels/batch_norm.cc cnn_jax/kernels/onednn_common.h \
  $(VENV)/.installed
	g++ -O3 -std=c++17 -shared -fPIC -fopenmp -Wall -o $@.tmp $(filter %.cc,$^) \
	  -isystem "$$($(PY) -c 'import jax; print(jax.ffi.include_dir())')" -isystem $(VENV_DIR)/include \
	  -L$(VENV_DIR)/lib -ldnnl -Wl,-rpath,$(VENV_DIR)/lib
	mv $@.tmp $@  # atomically: a running process keeps the library it mapped

models: setup
	$(PY) -m cnn_jax.models

# Trains configs/quickstart.py on the embedded digits (~1-2 min on 2 CPU cores); running it again
# resumes (here: re-evaluates) the run in $(QUICKSTART_DIR). eval.py then reports its test error.
QUICKSTART_DIR ?= runs/quickstart
quickstart: setup
	$(PY) train.py --config=configs/quickstart.py --workdir=$(QUICKSTART_DIR)
	$(PY) eval.py --workdir=$(QUICKSTART_DIR)

# The whole suite, one test file per worker on every core (pytest-xdist); ~9-14 min on 2 CPU cores.
test: setup
	$(PY) -m pytest -q -ra -n auto --dist loadfile

# The fast lane: the unit and small tests, everything not marked `slow` (tests/conftest.py marks the
# files that train, start subprocesses or compare at scale; single long tests carry the mark).
# About 2 min on 2 CPU cores (104-188 s measured, README). CI runs `make test`.
test-fast: setup
	$(PY) -m pytest -q -ra -n auto --dist loadfile -m 'not slow'
