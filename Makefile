# attnkit: `make demo` and `make test` each set everything up first (one command on a fresh
# machine). `make setup` is idempotent and quick once done.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attnkit-setup
PYTHON ?= python3
# The CPU build of torch lies on disk on these machines; pip takes it from there.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup system test demo bench lint clean

setup: system $(STAMP)

system:
	@./scripts/install-system-packages.sh

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/attnkit demo

bench: setup
	@# Spinning OpenMP threads stall the block kernels' many short operations on a shared
	@# machine, and the policy must be set before torch starts (docs/benchmarks.md).
	OMP_WAIT_POLICY=PASSIVE THP_MEM_ALLOC_ENABLE=1 $(VENV)/bin/attnkit bench --json out/bench.json

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
