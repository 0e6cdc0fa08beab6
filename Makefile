# Sluice: `make up` runs everything; `make test` runs the whole suite. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := tests/e2e

.PHONY: up test install test-deps node-deps chromium firefox lint bench clean

up: install
	$(BIN)/sluice up

test: install test-deps
	$(BIN)/pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test-deps: node-deps chromium firefox

# Real SDK clients for the end-to-end tests: @segment/analytics-node, analytics.js (analytics-next), playwright-core.
node-deps: $(E2E)/node_modules/.installed

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	cd $(E2E) && (test -f package-lock.json && npm ci --no-audit --no-fund || npm install --no-audit --no-fund)
	touch $@

# Debian's Chromium for analytics.js in a headless browser (never a browser download by a test tool).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Debian's Firefox ESR for the admin page's Firefox test, driven over Marionette (marionette-driver, a test extra).
firefox:
	@command -v firefox-esr >/dev/null 2>&1 || { \
	  echo "installing Debian firefox-esr for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq firefox-esr >/dev/null; }

lint: install
	$(BIN)/ruff check .

bench: install
	@echo "run one by hand (docs/benchmarks.md has the commands and figures): bench/gateway.py processor.py router.py pipeline.py soak.py warehouse.py admin_page.py"

clean:
	rm -rf $(VENV) $(E2E)/node_modules .pytest_cache
