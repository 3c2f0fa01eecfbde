# Two commands: `make run` (install + start on embedded defaults) and `make test`
# (install everything + lint + type-check + the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := tests/e2e

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install system-deps run test lint typecheck pytest bench bench-cluster clean

install: system-deps $(VENV)/.installed $(E2E)/node_modules/.installed

# redis-server for the Redis broker's tests (each test run starts its own on a free port) and
# Debian's chromium for the browser tests (driven by Playwright; never `playwright install`).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium with apt-get (browser tests)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	cd $(E2E) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed
	$(BIN)/tidings serve

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: install lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/fanout.py

bench-cluster: $(VENV)/.installed system-deps
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) $(E2E)/node_modules .pytest_cache .mypy_cache .ruff_cache
