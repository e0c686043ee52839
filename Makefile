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
	@# On a busy machine (load above the cores) spinning OpenMP threads stall the block
	@# kernels' many short operations, so the threads sleep instead; on a quiet one that
	@# costs every short operation a wake-up. Set before torch starts (docs/benchmarks.md).
	@if [ -z "$$OMP_WAIT_POLICY" ] && awk -v n=$$(nproc) '{exit !($$1 > n)}' /proc/loadavg; then \
		echo "busy machine: OMP_WAIT_POLICY=PASSIVE"; export OMP_WAIT_POLICY=PASSIVE; fi; \
	$(VENV)/bin/attnkit bench --json out/bench.json

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
