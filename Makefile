# The one entry point.  `make test` and `make study` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test bench study plots lint format clean

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

# The study harness is the next milestone; until then `make study` runs a smoke
# sweep of every registered entry on every engine and prints its error table.
study: $(STAMP)
	$(PY) -m experiments smoke

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-json=results/benchmark.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
	find . -name __pycache__ -prune -exec rm -rf {} +
