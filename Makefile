# CTA: the two commands are `make demo` (the main job) and `make test` (the test suite).
# Both create the virtualenv first if it is missing or pyproject.toml changed; both are idempotent.
# `make test` runs `make lint` first (ruff, mypy, import-linter's layer contracts), so a lint error, a type error
# or an import against the layers fails it before pytest starts.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench serve-exchange flows-serve clean images audit

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# The CPU build of torch first (from the local wheel cache): nothing may pull a CUDA build later.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# Every version as requirements.lock pins it (its pins without the hashes, as pip constraints): a package
	# released since the lock was written changes nothing here (`python -m deploy.supply_chain lock` renews it).
	grep -E '^[A-Za-z0-9]' requirements.lock | sed -e 's/ *\\$$//' > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -e '.[ml,dev]' -c $(VENV)/constraints.txt
	touch $(STAMP)

venv: $(STAMP)

demo: venv            ## the whole job on embedded defaults (the demo profile: config/demo.json)
	$(BIN)/cta --profile demo demo

test: lint            ## the static checks, then the whole test suite
	$(BIN)/python -m pytest

test-fast: venv       ## everything but the tests marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: venv            ## static checks: ruff (lint, format), mypy --strict, the layers (import-linter, pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

bench: venv           ## benchmarks: prints a table, writes benchmarks/results/*.json
	$(BIN)/python -m benchmarks.run

images: venv          ## container images cta/runtime:local, cta/flows:local on a private dockerd (deploy/README.md)
	$(BIN)/python -m deploy.images build $(if $(BASE),--base $(BASE))

audit: venv          ## known vulnerabilities in requirements.lock (pip-audit in a tool venv; exit 2: no service reachable)
	$(BIN)/python -m deploy.supply_chain audit

serve-exchange: venv
	$(BIN)/cta exchange serve

flows-serve: venv
	$(BIN)/cta flows serve

clean:
	rm -rf data logs .pytest_cache .mypy_cache .ruff_cache
