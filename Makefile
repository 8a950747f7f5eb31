# On a laptop or CI (no GPU):  make test | make bench | make lint
# On the GPU machine (torch and triton preinstalled, no network):  make test-gpu

VENV := .venv
PY   := $(VENV)/bin/python
# Pinned: here `torch==2.13.0` is a local CPU build that installs in seconds (an unpinned
# torch downloads a multi-GB CUDA build), and Triton 3.6's interpreter needs numpy < 2.4.
CPU_STACK := torch==2.13.0 triton==3.6.0 'numpy<2.4'
GPU_REPORT ?= bench-runs/gpu-suite-$(shell date -u +%Y%m%d-%H%M%S)

.PHONY: test bench test-gpu lint

test: $(VENV)/.installed-test
	TRITON_INTERPRET=1 $(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(VENV)/bin/im2win bench

test-gpu:
	mkdir -p $(GPU_REPORT)
	IM2WIN_GPU_REPORT=$(GPU_REPORT) PYTHONPATH=src python3 -m pytest -m gpu -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The venv and its CPU stack, once; then the package with one extra (again if pyproject changes).
$(VENV)/.cpu-stack:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(CPU_STACK)
	touch $@

$(VENV)/.installed-%: pyproject.toml | $(VENV)/.cpu-stack
	$(PY) -m pip install -q -e '.[$*]'
	touch $@
