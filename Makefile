# Each target does its own setup: a fresh clone needs nothing but python3.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.agentrt-installed
# torch==2.13.0 first: it is the CPU build available locally; the project's own range accepts it.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-js lint install bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,bench,offline,mujoco,export]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/agentrt demo

# Two pytest workers (pytest-xdist): most tests wait on real daemons and role processes, so two
# side by side take about 60% of the time of one even on 2 cores. make test PYTEST_WORKERS=0: one process.
# --durations: the slowest tests in every CI log, so a test that grows slower is seen when it does.
PYTEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=15

# The JavaScript peers of docs/protocol.md, run as a user copies them against real daemons (needs
# Node.js 18 or newer and npm; make test only checks that they parse).
JS_DEPS := .js-peer-deps
test-js: $(STAMP)
	mkdir -p $(JS_DEPS) && cd $(JS_DEPS) && npm install --silent zeromq@6 @msgpack/msgpack@3
	JS_PEER_DEPS=$(CURDIR)/$(JS_DEPS) $(PY) -m pytest -q -n 0 tests/test_js_peers.py

# ruff (lint and format) and mypy (strict for the wire and plugin API), as CI enforces them.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Every benchmark, then benchmarks/RESULTS.md and benchmarks/results.png (make bench BENCH_ARGS=--quick: a few minutes).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache $(JS_DEPS)
