# napari-qpi: `make run` reconstructs the bundled sample headless; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Debian packages napari needs for a real (virtual) X server in the tests.
XVFB_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
	libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 \
	libgl1 libegl1 libfontconfig1 libdbus-1-3
SAMPLE_DIR := src/napari_qpi/sample_data

.PHONY: run test install install-test system-deps bench lint format samples docs-screenshots clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[testing,bench]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/napari-qpi reconstruct $(SAMPLE_DIR)/cells_hologram.ome.tif \
		--reference $(SAMPLE_DIR)/cells_background.ome.tif --out results/ --overwrite --measure --table

system-deps:
	@if command -v Xvfb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing Xvfb and the xcb libraries napari needs (apt-get)..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XVFB_PACKAGES) >/dev/null; \
	else \
		echo "The GUI tests need a virtual X server. Install, as root:"; \
		echo "  apt-get install -y $(XVFB_PACKAGES)"; exit 1; \
	fi

test: install-test system-deps
	$(PY) -m pytest

# Regenerates every table of docs/benchmarks.md, each side by side with its peer in one run.
bench: install-test
	$(PY) benchmarks/offaxis_classical.py --write
	$(PY) benchmarks/loss_ablation.py --write
	$(PY) benchmarks/searched_models.py --write
	$(PY) benchmarks/resolution_bound.py --write
	$(PY) benchmarks/batch.py --write
	$(PY) benchmarks/cdp.py --write
	$(PY) benchmarks/finetune.py --write
	$(PY) benchmarks/refocus.py --write

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks sample_data
	$(VENV)/bin/ruff format --check src tests benchmarks sample_data

format: install-test
	$(VENV)/bin/ruff format src tests benchmarks sample_data
	$(VENV)/bin/ruff check --fix src tests benchmarks sample_data

samples: install
	$(PY) sample_data/make_samples.py --out $(SAMPLE_DIR)

docs-screenshots: install-test system-deps
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) docs/make_screenshots.py

clean:
	rm -rf results .pytest_cache build dist
