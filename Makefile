# RegionLens: `make demo` and `make test` set everything up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Interpreter the backend venv is made from (Python 3.11).
PYTHON ?= python3
# Debian's python: the only one that imports qgis.
QGIS_PYTHON := /usr/bin/python3
BACKEND := .venv/backend
QGISENV := .venv/qgis
BPY := $(BACKEND)/bin/python
QPY := $(QGISENV)/bin/python
OFFSCREEN := QT_QPA_PLATFORM=offscreen
PLUGIN_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins/regionlens

.PHONY: help setup qgis models demo test test-backend test-plugin bench bench-venv leaderboard gpu-check lint package install-plugin screenshots clean

help:
	@echo "make demo            set up everything and run the San Francisco sample into out/demo/"
	@echo "make test            set up everything and run all tests (backend and plugin)"
	@echo "make setup           QGIS (apt, as root, when missing), .venv/backend, .venv/qgis, offline models"
	@echo "make bench           baseline benchmark on the sample city (time per stage, peak memory, R2)"
	@echo "make bench-venv      .venv/bench: srai (CPU torch) for the leaderboard; never needed by the plugin or tests"
	@echo "make leaderboard     bench/leaderboard.py in the background (sample city + DATA=...; log out/leaderboard.log)"
	@echo "make gpu-check       every method on CUDA, speed tables, 2-GPU run (out/gpu_check.json; cpu fallback without CUDA)"
	@echo "make lint            ruff and bandit (medium severity and up: zero findings)"
	@echo "make package         dist/regionlens-<version>.zip for QGIS 'Install from ZIP'"
	@echo "make install-plugin  link this folder into the default QGIS profile's plugins"
	@echo "make screenshots     docs/images/*.png: run dock, results map, embedding explorer (runs out/screenshots/ if needed)"

setup: qgis $(BACKEND)/.installed $(QGISENV)/.installed models

qgis:
	@if $(QGIS_PYTHON) -c "import qgis.core, ensurepip" 2>/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing QGIS 3.22 from apt (about 1.2 GB)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    qgis python3-qgis qgis-providers xvfb xauth python3-venv; \
	else \
	  echo "QGIS (python3-qgis) or python3-venv is missing. Install them:"; \
	  echo "  sudo apt-get install qgis python3-qgis qgis-providers python3-venv"; exit 1; \
	fi

$(BACKEND)/.installed: requirements/backend.txt requirements/dev.txt
	$(PYTHON) -m venv $(BACKEND)
	$(BPY) -m pip install -q --upgrade pip
	$(BPY) -m pip install -q -r requirements/backend.txt -r requirements/dev.txt
	touch $@

$(QGISENV)/.installed: requirements/qgis-tests.txt
	$(QGIS_PYTHON) -m venv --system-site-packages $(QGISENV)
	$(QPY) -m pip install -q -r requirements/qgis-tests.txt
	@$(QPY) -c "import numpy, sys; sys.exit(0 if numpy.__version__.startswith('1.') else 'numpy 2 in .venv/qgis breaks GDAL')"
	touch $@

models: $(BACKEND)/.installed
	@HF_HUB_OFFLINE=1 $(BPY) -m backend.encoders check

demo: setup
	$(BPY) -m backend demo --out out/demo
	$(OFFSCREEN) $(QPY) -m plugin.render_demo out/demo

test: setup lint test-backend test-plugin

test-backend:
	$(BPY) -m pytest tests/backend

test-plugin:
	$(OFFSCREEN) $(QPY) -m pytest tests/plugin

bench: setup
	$(BPY) bench/baseline.py

# Every method on CUDA on the sample city, the HAFusion and ReFound speed tables and a 2-GPU torchrun run
# (under 10 minutes on one GPU machine); without CUDA a labelled cpu fallback of tiny sizes (docs/scale.md).
gpu-check: setup
	$(BPY) bench/gpu_check.py --json out/gpu_check.json

# Benchmark-only environment: srai (the peer the leaderboard compares with) with the CPU torch pin.
BENCHENV := .venv/bench
DATA ?= ../shared/data/hafusion_nyc

bench-venv: $(BENCHENV)/.installed

$(BENCHENV)/.installed: requirements/bench.txt
	$(PYTHON) -m venv $(BENCHENV)
	$(BENCHENV)/bin/python -m pip install -q --upgrade pip
	$(BENCHENV)/bin/python -m pip install -q -r requirements/bench.txt
	touch $@

# The whole leaderboard (hours on 2 CPU cores; resumes from out/leaderboard_cache/).
leaderboard: setup bench-venv
	mkdir -p out
	OMP_NUM_THREADS=1 nohup $(BPY) bench/leaderboard.py --data $(DATA) --protocol reference \
	  --json-dir out/leaderboard --markdown out/leaderboard/leaderboard.md > out/leaderboard.log 2>&1 &
	@echo "leaderboard running in the background; log: out/leaderboard.log, tables: out/leaderboard/"

lint: $(BACKEND)/.installed
	$(BPY) -m ruff check .
	$(BPY) -m bandit -q -r backend plugin regionlens_common.py -ll

package:
	python3 scripts/package_plugin.py --out dist

screenshots: setup
	$(OFFSCREEN) $(QPY) scripts/screenshots.py

install-plugin:
	mkdir -p "$(dir $(PLUGIN_DIR))"
	ln -sfn "$(CURDIR)" "$(PLUGIN_DIR)"
	@echo "Linked $(CURDIR) -> $(PLUGIN_DIR); enable RegionLens in QGIS's Plugin Manager."

clean:
	rm -rf out dist .pytest_cache .ruff_cache
