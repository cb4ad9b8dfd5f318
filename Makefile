# cnnlab: `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cnnlab-installed
FMNIST := /usr/share/datasets/fashion-mnist
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data browser postgres demo lint test test-long test-slow attack bench race-env race clean

setup: $(STAMP) data

# torch is installed first, pinned, so that the package's own range is already satisfied
# (a bare `torch` requirement would otherwise pull whatever build the index offers).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST comes from Debian's dataset-fashion-mnist package where we can install it.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST found in $(FMNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's dataset-fashion-mnist ..."; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST installed in $(FMNIST)"; \
	else \
	  echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or pass --data-dir DIR holding the four IDX files, or let torchvision download them (--download)."; \
	fi

# Debian's Chromium lets the test suite open report.html in a real browser (Playwright drives it).
browser:
	@if [ -x /usr/bin/chromium ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's chromium for the report test ..."; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
	else \
	  echo "chromium not found (sudo apt-get install chromium): the browser test will be skipped"; \
	fi

# Debian's PostgreSQL lets the sweep tests share one study between workers through a real server
# (the tests start their own throw-away server on a free port as an unprivileged user).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's postgresql for the sweep storage test ..."; \
	  apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null); \
	else \
	  echo "PostgreSQL not found (sudo apt-get install postgresql): the shared-study test will be skipped"; \
	fi

# the default net (cnn-bn) and recipe (one-cycle to 3e-3 over its ~850 steps = 2 epochs here): test accuracy ~0.905
demo: setup
	$(BIN)/cnnlab train --data fashion-mnist --out runs/demo --overwrite

# the floor plan's contracts: ruff (rules and format), the import layers (import-linter), types (mypy);
# tests/test_architecture.py adds what these cannot say (no cnnlab import inside a function, no cycle)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

# the default suite in TEST_WORKERS processes (pytest-xdist, a test file per process at a time: its
# module fixtures are built once), then the tests that measure the machine's load, on their own
TEST_WORKERS ?= 2
test: $(STAMP) data browser postgres lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not alone and not long"
	$(BIN)/python -m pytest -q -m "alone and not slow and not long"

# the kill-and-resume tests, the whole attack corpus and the larger studies (~5 min on 2 cores):
# out of the default suite to keep it under 10 minutes; CI runs them after it
test-long: $(STAMP) data browser postgres
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "long and not slow and not alone"
	$(BIN)/python -m pytest -q -m "long and alone and not slow"

test-slow: $(STAMP) data browser postgres
	$(BIN)/python -m pytest -q -m slow

# every hostile input of the attack corpus against the real commands; prints the counts
attack: $(STAMP)
	$(BIN)/python -m tests.attack -q

bench: demo
	$(BIN)/python benchmarks/cache_vs_imagefolder.py
	$(BIN)/python benchmarks/feature_cache.py
	$(BIN)/python benchmarks/shards_vs_memory.py
	$(BIN)/python benchmarks/serve_load.py runs/demo

# TensorFlow/Keras for benchmarks/race.py, in a venv of its own (its pins clash with the project's)
race-env: .venv-tf/.installed
.venv-tf/.installed:
	$(PYTHON) -m venv .venv-tf
	.venv-tf/bin/pip install --quiet tensorflow-cpu
	touch $@

race: setup race-env
	$(BIN)/python benchmarks/race.py --busy-core

clean:
	rm -rf runs .pytest_cache build dist src/*.egg-info
