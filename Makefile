# Two commands do all the set-up: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Telemetry off for every tool, in every target.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export ORT_DISABLE_TELEMETRY := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test test-slow test-all lint bench bench-quick bench-train bench-throughput clean

install: $(STAMP)

# constraints.txt pins every transitive version (torch==2.13.0: the CPU wheel).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

## demo: embedded demo dataset -> DVC-tracked data/ -> the train stage (dvc repro) ->
## registered as classifier v1.0.0 and promoted to production -> a revision (validate, unlearn
## sweep, compose, gates, ONNX export) registered as v1.1.0 (candidate, staging) with its
## ledger entry -> the maintain stage (dvc repro; its sweep runs come from the cache), so
## `dvc status` is clean and `dvc exp run -S unlearn.gamma=1.0` re-runs only the revision
demo: install
	$(PY) -m cli prepare
	dvc repro train
	$(PY) -m cli register
	$(PY) -m cli promote classifier v1.0.0 --to staging --by demo --why "initial demo model"
	$(PY) -m cli promote classifier v1.0.0 --to production --by demo --why "initial demo model"
	$(PY) -m cli revise
	dvc repro maintain
	$(PY) -m cli registry
	dvc status

## test: the fast default suite (every behaviour, under 15 min on 2 cores); fails, never
## skips, on missing shared data when CI=true
test: install
	$(PY) -m pytest -m "not slow"

## test-slow: the long end-to-end and real-data tests (marked slow); .ci/run runs both
test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

## bench: every method on every scenario (full protocol, long: see BENCHMARKS.md)
bench: install
	$(PY) -m cli bench benchmarks/*.yaml

## bench-quick: one seed, tiny grid, short training (all scenarios in under 15 min on 2 cores)
bench-quick: install
	$(PY) -m cli bench benchmarks/*.yaml --quick

## bench-train: deployed-model accuracy and seconds per epoch on the shared datasets
bench-train: install
	$(PY) scripts/bench_train.py

## bench-throughput: images/s and GFLOP/s of training and every method on every zoo model
bench-throughput: install
	$(PY) scripts/bench_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
