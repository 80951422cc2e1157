# Every target works on a fresh machine: it builds .venv first when needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo repro test test-all bench lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m janus_jax.demo

# The paper's claim at toy scale: generic vs. 1 vs. 3 system messages per instruction (runs/repro/report.md).
repro: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m data_gen.world repro --out runs/repro

# Test files run in parallel (pytest-xdist), one file per worker at a time so module fixtures are built once,
# in collection order: tests/conftest.py puts the slowest files first.
XDIST := -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

test-all: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "slow or not slow"

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
