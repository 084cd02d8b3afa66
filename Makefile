# The one entry point.  `make test` and `make study` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test bench bench-gpu bench-dask study study-quick plots lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,study]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The whole study into results/ (resumable: rerun after an interruption).
study: $(STAMP)
	$(PY) -m experiments study

study-quick: $(STAMP)
	$(PY) -m experiments study --quick

# Figures and CLAIMS.md again, from the committed tables only.
plots: $(STAMP)
	$(PY) -m experiments plots

# pytest-benchmark's table, then the roofline benchmark (ours, a parallel copy and
# the installed peers timed interleaved; install the peers with `pip install -e ".[peers]"`).
bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-json=results/benchmark.json
	$(PY) -m experiments bench-summary
	$(PY) -m experiments roofline
	$(PY) -m experiments plots

# On a machine with an NVIDIA GPU (and numba-cuda; PyTorch and CuPy when present).
bench-gpu: $(STAMP)
	$(PY) -m experiments.gpu_bench --out results/gpu

# softmax_numba.dask out of core: logits 4x one worker's memory limit, local cluster.
bench-dask: $(STAMP)
	$(PY) -m experiments.dask_bench --out results/dask

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
	find . -name __pycache__ -prune -exec rm -rf {} +
