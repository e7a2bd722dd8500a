# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create the virtualenv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: this exact CPU wheel is what the project is tested with.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev,ray,rllib]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlobs demo

lint: $(STAMP)
	$(VENV)/bin/ruff check rlobs sinks tests examples benchmarks
	$(VENV)/bin/mypy

# The suite in two passes: most tests 3 at a time (they mostly wait on servers and
# subprocesses), then the ones that bound times or memory alone.
test: lint
	$(PY) -m pytest -n 3 -m "not serial"
	$(PY) -m pytest -m serial

bench: $(STAMP)
	$(PY) benchmarks/bench_step.py

clean:
	rm -rf $(VENV) rlobs-runs .pytest_cache .mypy_cache .ruff_cache
