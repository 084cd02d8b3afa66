# The one entry point.  `make test` and `make study` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast docs bench bench-gpu gpu-compile bench-dask study study-quick plots lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,study,docs]"
	touch $(STAMP)

install: $(STAMP)

# Spread over the cores with pytest-xdist (tests sharing a module fixture, the compile
# gate and the dask cluster, stay in one worker); Numba's on-disk cache is safe to
# share between the workers.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=25

# The edit loop: every test but those marked `slow` (the whole quick study, the other
# scales of the accuracy grid, the large shapes, the dask cluster sweeps, the
# subprocess compile checks...): under two minutes with a warm Numba cache.  Every op
# and engine is still checked; CI runs `make test`, which runs the slow ones too.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slow"

# The API reference from the numpy docstrings, with results/CLAIMS.md, the study's
# figures and docs/ARCHITECTURE.md, into docs/_build/html (a few seconds); a warning
# is an error.  tests/test_docs.py runs the same build in make test.
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The whole study into results/, every step measured again here and now; each table
# (rows stamped with this run's id, runs listed in its .meta.json) replaces the old one
# only when it is complete.  After an interruption `make study` again resumes it, if
# the code, machine, packages and settings are the same; otherwise it stops and says
# why: then `make study STUDY_FLAGS=--fresh` discards the interrupted rows, or
# STUDY_FLAGS=--keep keeps them (their runs listed apart).
STUDY_FLAGS ?=

study: $(STAMP)
	$(PY) -m experiments study $(STUDY_FLAGS)

# The same on small grids (about a minute), into results/quick.
study-quick: $(STAMP)
	$(PY) -m experiments study --quick $(STUDY_FLAGS)

# Figures and CLAIMS.md again, from the committed tables only.
plots: $(STAMP)
	$(PY) -m experiments plots

# The peers of the benchmarks (torch, onnxruntime and onnx, JAX, entmax), into the venv.
PEERS_STAMP := $(VENV)/.peers

$(PEERS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[peers]"
	touch $(PEERS_STAMP)

# The peers, pytest-benchmark's table, then the roofline benchmark (ours, a parallel
# copy and the peers timed interleaved), then every op from 1 x 10 to 16384 x 4096
# against the peers (results/SIZES.md, sizes.csv, sizes.png; about 10 minutes on 2
# cores), then a token drawn from logits by sample() against torch's sort path (vLLM's),
# torch.topk, torch.multinomial and NumPy (results/SAMPLING.md, sampling.csv), then
# forward + backward through softmax_numba.torch against torch
# (results/TORCH.md), then linear_cross_entropy against the materialized forms
# (results/LINEAR.md).
bench: $(STAMP) $(PEERS_STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-json=results/benchmark.json
	$(PY) -m experiments bench-summary
	$(PY) -m experiments roofline
	$(PY) -m experiments sizes
	$(PY) -m experiments sampling
	$(PY) -m experiments crossover
	$(PY) -m experiments torch-autograd
	$(PY) -m experiments linear-ce
	$(PY) -m experiments plots

# Every CUDA kernel compiled for sm_90 (NVVM, then ptxas -v) with no GPU: the table of
# registers, shared memory, spills, vector loads, shuffles and barriers (make test checks it).
gpu-compile: $(STAMP)
	env -u NUMBA_ENABLE_CUDASIM $(PY) -m experiments.device.compile_gate --out results/gpu

# On a machine with an NVIDIA GPU, one call: the CUDA tests on the GPU (not the
# simulator; results/gpu/tests.log), then our kernels in float32 and bfloat16 against a
# device-to-device copy, PyTorch and a Triton softmax where they are installed
# (results/gpu/speed.csv, speed.meta.json, speed.png): under 8 minutes of GPU time,
# BENCH_GPU_FLAGS=--quick under 4.  Where the image already holds numba-cuda, torch and
# ml_dtypes (the lent H100/H200 machines, which reach no package index), PY=python3
# runs it without the venv: make bench-gpu PY=python3 [BENCH_GPU_FLAGS=--quick].
BENCH_GPU_FLAGS ?=

bench-gpu: $(if $(findstring $(VENV)/,$(PY)),$(STAMP))
	env -u NUMBA_ENABLE_CUDASIM PYTHONPATH=. $(PY) -m experiments.device.gpu_bench --out results/gpu --tests $(BENCH_GPU_FLAGS)

# softmax_numba.dask out of core: logits 4x one worker's memory limit, local cluster.
bench-dask: $(STAMP)
	$(PY) -m experiments.measure.dask_bench --out results/dask

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks docs/_build
	find . -name __pycache__ -prune -exec rm -rf {} +
