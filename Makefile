# CTA: the two commands are `make demo` (the main job) and `make test` (the test suite).
# Both create the virtualenv first if it is missing or pyproject.toml changed; both are idempotent.
# `make test` runs `make lint` first (ruff, mypy, import-linter's layer contracts), so a lint error, a type error
# or an import against the layers fails it before pytest starts.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The dashboard (dashboard/: Vite + React + TypeScript): its packages as package-lock.json pins them, then its build
# (dashboard/dist, served by the worker's API at /). Rebuilt when a source file changes.
NPM       ?= npm
DASH      := dashboard
DASH_DEPS := $(DASH)/node_modules/.installed
DASH_DIST := $(DASH)/dist/index.html
DASH_SRC  := $(shell find $(DASH)/src -type f 2>/dev/null) $(DASH)/index.html $(DASH)/vite.config.ts $(DASH)/tsconfig.json
# The browser the end-to-end tests drive: Debian's Chromium (Playwright's own download cannot work offline).
CHROMIUM  ?= /usr/bin/chromium

.PHONY: venv demo test test-fast lint bench serve-exchange flows-serve clean images audit dashboard dashboard-test browser

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

$(DASH_DEPS): $(DASH)/package-lock.json
	cd $(DASH) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $(DASH_DEPS)

$(DASH_DIST): $(DASH_DEPS) $(DASH_SRC)
	cd $(DASH) && $(NPM) run build --silent

dashboard: $(DASH_DIST)  ## the dashboard's packages and build (dashboard/dist, served by the worker's API at /)

dashboard-test: $(DASH_DEPS)  ## the dashboard's unit and component tests (Vitest)
	cd $(DASH) && $(NPM) test --silent

browser:              ## Debian's Chromium for the end-to-end tests (installed once, with apt, when missing)
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
		else echo "Chromium is missing: sudo apt-get install chromium (or set CHROMIUM=/path/to/chromium)"; exit 1; fi; }

demo: venv dashboard  ## the whole job on embedded defaults (the demo profile: config/demo.json)
	$(BIN)/cta --profile demo demo

test: lint dashboard browser dashboard-test  ## the static checks, the dashboard's own tests, then the whole test suite
	DASHBOARD_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test-fast: venv dashboard browser  ## everything but the tests marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: venv            ## static checks: ruff (lint, format), mypy --strict, the layers (import-linter, pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

bench: venv           ## benchmarks: prints a table, writes benchmarks/results/*.json
	$(BIN)/python -m benchmarks.run

images: venv dashboard  ## container images cta/runtime:local, cta/flows:local on a private dockerd (deploy/README.md)
	$(BIN)/python -m deploy.images build $(if $(BASE),--base $(BASE))

audit: venv          ## known vulnerabilities in requirements.lock (pip-audit in a tool venv; exit 2: no service reachable)
	$(BIN)/python -m deploy.supply_chain audit

serve-exchange: venv
	$(BIN)/cta exchange serve

flows-serve: venv
	$(BIN)/cta flows serve

clean:
	rm -rf data logs .pytest_cache .mypy_cache .ruff_cache $(DASH)/dist
