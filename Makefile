# Everything sets itself up from nothing: a venv, the CPU torch wheel, the package, the data.
# A second run skips what is already installed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP  := $(VENV)/.genlab-installed

.PHONY: setup data demo test lint bench clean

setup: $(STAMP) data

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: left to resolve `torch>=2.3` on its own, pip fetches GBs of CUDA packages.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	touch $@

$(STAMP): pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[test,export,text,serve]"
	touch $@

# Debian packages the tests use: full Fashion-MNIST, and Chromium for the real-browser tests of
# `genlab report` and `genlab compare`. As root, one apt-get update, then what is missing is
# installed (one by one if together fails); otherwise say how. Never fails: those tests skip.
data:
	@missing=""; \
	if ! [ -d /usr/share/datasets/fashion-mnist ] && ! [ -n "$$GENLAB_DATA" -a -d "$$GENLAB_DATA/fashion-mnist" ]; then \
		missing="dataset-fashion-mnist"; \
	fi; \
	if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
		missing="$$missing chromium"; \
	fi; \
	if [ -z "$$missing" ]; then \
		true; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq >/dev/null 2>&1; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 || for package in $$missing; do \
			apt-get install -y -qq $$package >/dev/null 2>&1 || \
			echo "note: could not install $$package; the tests that need it will be skipped"; \
		done; \
	else \
		echo "note: missing$$missing: run 'sudo apt-get install$$missing' (the tests that need them are skipped)"; \
	fi

# The main job on embedded data: the default VAE on mnist-5k, sample grids, the training trace.
demo: setup
	$(VENV)/bin/genlab datasets
	$(VENV)/bin/genlab train vae --data mnist-5k --epochs 20 --seed 0 --out runs/demo-vae --overwrite
	$(VENV)/bin/genlab sample runs/demo-vae --n 64 --seed 1 --out runs/demo-vae/grid.png
	$(VENV)/bin/genlab sample runs/demo-vae --interpolate --n 4 --seed 1 --out runs/demo-vae/interpolation.png
	@echo "sample grids: runs/demo-vae/samples/epoch_*.png, runs/demo-vae/grid.png, runs/demo-vae/interpolation.png"

# Lint, format and types first (seconds), then the suite on every core: one pytest worker per core,
# each with one torch thread (two threads per worker on two cores would only fight over them).
test: setup lint
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n auto --durations=20

lint: setup
	$(VENV)/bin/ruff check src
	$(VENV)/bin/ruff format --check src
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/vae_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
