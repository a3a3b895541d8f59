# xnorflow: `make demo` runs the main job on the embedded default, `make test` passes the tests.
# Both create their own virtual environment (.venv) on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BUILD  ?= build/demo
# Two workers: this machine has two cores; Verilator builds and Amaranth simulations are CPU-bound.
PYTEST_WORKERS ?= 2

.PHONY: setup demo test test-all bench bench-sweep lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned: pip takes this machine's CPU wheel instead of a multi-GB CUDA build.
	# The qonnx extra (qonnx, onnx, onnxruntime, Brevitas) for the QONNX tests.
	$(PY) -m pip install --quiet -e '.[test,qonnx]'
	touch $@

demo: setup
	$(VENV)/bin/xnorflow flow --arch tfc --dataset digits --board icebreaker -o $(BUILD)

test: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-all: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m ""

bench: setup
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) bench/run.py --out bench

# SFC at --lut-share 0.5 (II 47) on the ULX3S-85F over nextpnr seeds 1-4 at 95 MHz, built at once (about an hour of both cores here).
bench-sweep: setup
	$(PY) bench/run.py --out bench --sweep sfc-85f-share0.5-seeds

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache sim_build
