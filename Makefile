# dflowgen — set-up and the jobs a user runs. `make demo` and `make test` work on a fresh machine.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# 2 threads is the size of the machines this project is tested on; override for bigger ones.
export OMP_NUM_THREADS ?= 2

.PHONY: install test test-slow demo bench bench-gpu reproduce-table benchmark clean

install: $(STAMP)

# torch is pinned and installed first: an unpinned torch pulls gigabytes of CUDA packages.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# Rerun-safe: a rerun resumes (or keeps) the set in demo-out; it never overwrites. Every sample is previewed.
DEMO_SAMPLES := 16
demo: install
	$(VENV)/bin/dflowgen generate --target demo --num-samples $(DEMO_SAMPLES) --out demo-out --preview
	$(VENV)/bin/dflowgen inspect demo-out

# OFFICIAL=path/to/RAFT/core also times the official RAFT beside ours, in the same processes.
bench: install
	$(PY) bench/render.py
	$(PY) bench/train_step.py $(if $(OFFICIAL),--official $(OFFICIAL))
	$(PY) bench/optimize.py --recipe reproduce-mini
	$(PY) bench/search.py
	$(PY) bench/infer_speed.py
	$(PY) bench/demo.py --num-samples $(DEMO_SAMPLES)
	$(PY) bench/set_memory.py

# On a CUDA machine: the CUDA/bf16 correctness checks and the GPU figures, within 8 minutes (log in results/gpu/).
bench-gpu: install
	PYTHON=$(PY) bash bench/gpu.sh

# The papers' key comparisons at a size this hardware runs (SCALE=mini: at most 90 minutes on 2 idle CPU cores;
# SCALE=paper: the paper's sizes, a GPU job). Every stage resumes; rerunning skips what is done.
SCALE ?= mini
reproduce-table: install
	$(VENV)/bin/dflowgen reproduce --recipe reproduce-$(SCALE) --out results/reproduce-$(SCALE)

# Every method against hidden target domains whose truth is known (SCALE=mini: about 72 min on 2 idle CPU
# cores, measured; SCALE=paper: a GPU job). Resumes like reproduce-table.
benchmark: install
	$(VENV)/bin/dflowgen benchmark --recipe known-target-$(SCALE) --out results/known-target-$(SCALE)

clean:
	rm -rf $(VENV) demo-out .pytest_cache
