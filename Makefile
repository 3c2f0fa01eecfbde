# Two commands: `make run` (install the runtime dependencies + start on embedded defaults;
# ARGS="..." passes flags) and `make test` (install everything + lint + type-check + the
# whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := tests/e2e
EXAMPLES := examples
JS := js
# Every Python package comes from uv.lock (`uv sync --locked`), uv itself from the hashed
# tools/uv-requirements.txt; npm packages from package-lock.json files (`npm ci`).
UV_HOME := .cache/uv
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install example redis-server wrk postgresql system-deps check-lock lock test-lowest run test lint typecheck pytest bench bench-quick bench-cluster fuzz soak clean

install: system-deps check-lock $(VENV)/.installed $(E2E)/node_modules/.installed $(EXAMPLES)/node_modules/.installed $(JS)/node_modules/.installed conformance-deps

# redis-server for the Redis broker's tests (each test run starts its own on a free port),
# Debian's chromium for the browser tests (driven by Playwright; never `playwright install`)
# and systemd-analyze for the unit file's test.
system-deps: redis-server postgresql
	@command -v systemd-analyze >/dev/null 2>&1 || { \
		echo "installing systemd with apt-get (systemd-analyze checks deploy/tidings.service)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium with apt-get (browser tests)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(UV): tools/uv-requirements.txt
	$(PYTHON) -m venv --clear $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --quiet --require-hashes --no-deps -r tools/uv-requirements.txt
	touch $@

# Fails, and says what to do, when pyproject.toml changed without `make lock`.
check-lock: $(UV)
	@$(UV) lock --check --quiet 2>/dev/null || { \
		echo >&2 "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock with the change."; \
		exit 1; }

# After changing a dependency range in pyproject.toml: resolve again and write uv.lock.
lock: $(UV)
	$(UV) lock

# Exactly the locked versions (--locked refuses to resolve anew); the package is installed
# editable and rebuilt here, so a change to _fanout.c or _wsframe.c reaches the venv.
$(VENV)/.installed: pyproject.toml uv.lock src/tidings/_fanout.c src/tidings/_wsframe.c $(UV)
	$(UV) sync --quiet --locked --extra dev --python $(PYTHON) --reinstall-package tidings
	touch $@ $(VENV)/.installed-run

# `make run` needs the runtime dependencies only, not the test and lint tools of the dev
# extra (Playwright, mypy, ruff: most of a fresh install's time). --inexact adds what is
# missing and removes nothing, so `make run` after `make test` keeps the dev tools; a dev
# install above stamps this one too, since it is a superset.
$(VENV)/.installed-run: pyproject.toml uv.lock src/tidings/_fanout.c src/tidings/_wsframe.c $(UV)
	$(UV) sync --quiet --locked --inexact --python $(PYTHON) --reinstall-package tidings
	touch $@

# The Autobahn Testsuite (Python 2.7 only) in .cache/ab27; idempotent. Without Python 2.7 it
# says so and the conformance test skips (docs/conformance.md).
.PHONY: conformance-deps conformance
conformance-deps:
	@bash tests/conformance/install.sh

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	cd $(E2E) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(EXAMPLES)/node_modules/.installed: $(EXAMPLES)/package.json $(EXAMPLES)/package-lock.json
	cd $(EXAMPLES) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# pusher-js for the Node tests of tidings.js (js/test, run by tests/e2e/test_tidings_js.py).
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

# wrk, the HTTP load generator of bench/publish.py (REST triggers replayed from a pool of
# pre-signed requests by bench/publish.lua).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		echo "installing wrk with apt-get (bench/publish.py)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

# PostgreSQL for the live-model tests (each run makes its own cluster with initdb on a free
# port; the server is never started as a service).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing postgresql with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# One of the apps in examples/ (examples/README.md): make example NAME=chat [PORT=8000].
# Installs what it needs (the `examples` group of uv.lock, pusher-js from its package-lock,
# redis-server with apt-get) and starts everything it uses; Ctrl-C stops all of it.
NAME ?=
PORT ?= 8000
EXAMPLE_NAMES := $(notdir $(patsubst %/run.py,%,$(wildcard $(EXAMPLES)/*/run.py)))
example: check-lock redis-server $(EXAMPLES)/node_modules/.installed $(VENV)/.installed-examples
	@test -n "$(NAME)" -a -f "$(EXAMPLES)/$(NAME)/run.py" || { \
		echo >&2 "usage: make example NAME=<name> [PORT=8000], NAME one of: $(EXAMPLE_NAMES)"; exit 2; }
	PORT=$(PORT) $(BIN)/python $(EXAMPLES)/$(NAME)/run.py

$(VENV)/.installed-examples: pyproject.toml uv.lock src/tidings/_fanout.c src/tidings/_wsframe.c $(UV)
	$(UV) sync --quiet --locked --inexact --group examples --python $(PYTHON) --reinstall-package tidings
	touch $@

# Flags for `tidings serve`: make run ARGS="--config tidings.toml --port 6002".
ARGS ?=
run: check-lock $(VENV)/.installed-run
	$(BIN)/tidings serve $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples $(wildcard bench) $(wildcard fuzz)
	$(BIN)/ruff format --check src tests examples $(wildcard bench) $(wildcard fuzz)

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Two workers, one test file each at a time (--dist loadfile keeps a file's fixtures, such as
# its servers, in one process): most of the suite waits on real servers and sockets, so two
# workers halve the wall time on two cores. PYTEST_ARGS="-n 0" runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile
pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: install lint typecheck pytest

# The lower bounds of pyproject.toml's ranges, tested: a venv of its own with the lowest
# versions they allow (resolved anew, not from uv.lock, by design), then the unit and
# integration tests.
LOWEST := .cache/venv-lowest
test-lowest: system-deps $(UV)
	$(UV) venv --quiet --clear --python $(PYTHON) $(LOWEST)
	VIRTUAL_ENV=$(LOWEST) $(UV) pip install --quiet --resolution lowest-direct -e '.[dev]'
	$(LOWEST)/bin/pytest tests/unit tests/integration

# Every Autobahn case against `tidings serve --conformance`; HTML in test-artifacts/autobahn.
conformance: $(VENV)/.installed conformance-deps
	$(BIN)/python tests/conformance/autobahn.py --all --outdir test-artifacts/autobahn

# Side by side (docs/benchmarks.md): Tidings, Soketi 1.6.1, python-socketio, a raw aiohttp ceiling,
# and Tidings and python-socketio under uvicorn (ASGI), at N = 1,000 / 10,000 / 50,000, 3 interleaved runs (~35 min), then 1 node vs 2 nodes
# on one Redis (~5 min). The peers install themselves into .cache/bench/; matplotlib (plots)
# goes into .venv here, never as a package dependency. BENCH_ARGS=--docs copies the plots to
# docs/img/. `make bench-quick`: 1 run, N = 1,000, short phases (~3 min). Then bench/hold.py
# holds 100,000 connections with workers on Redis, as many as this machine's 20,000 open files
# per process need (issue 17; --quick: 10,000), bench/fallback_memory.py the HTTP fallback's
# memory and idle CPU per session against WebSocket (issue 17; --quick too), bench/live.py
# live models on PostgreSQL (issue 15; --quick in bench-quick), and bench/publish.py the REST
# publish path against Soketi with wrk (issue 18; --quick too).
BENCH_ARGS ?=
BENCH_DEPS = $(UV) sync --quiet --locked --inexact --extra dev --group bench --python $(PYTHON)
bench: install wrk
	$(BENCH_DEPS)
	$(BIN)/python bench/fanout.py $(BENCH_ARGS); a=$$?; \
	$(BIN)/python bench/cluster.py --configs memory,redis2; b=$$?; \
	$(BIN)/python bench/hold.py; c=$$?; \
	$(BIN)/python bench/fallback_memory.py; f=$$?; \
	$(BIN)/python bench/live.py; d=$$?; \
	$(BIN)/python bench/publish.py; e=$$?; exit $$((a || b || c || d || e || f))

bench-quick: install wrk
	$(BENCH_DEPS)
	$(BIN)/python bench/fanout.py --quick $(BENCH_ARGS); a=$$?; \
	$(BIN)/python bench/cluster.py --quick --configs memory,redis2; b=$$?; \
	$(BIN)/python bench/hold.py --quick; e=$$?; \
	$(BIN)/python bench/fallback_memory.py --quick; f=$$?; \
	$(BIN)/python bench/live.py --quick; c=$$?; \
	$(BIN)/python bench/publish.py --quick; d=$$?; exit $$((a || b || c || d || e || f))

bench-cluster: $(VENV)/.installed system-deps
	$(BIN)/python bench/cluster.py

# Fuzzing with atheris (libFuzzer for Python), FUZZ_SECONDS per target; docs/testing.md.
# atheris is the `fuzz` group of uv.lock, not a package dependency. 3.0.0 ships a manylinux
# wheel for CPython 3.11; without a wheel uv builds it from source, which needs clang and
# compiler-rt's libFuzzer: apt-get installs them only then.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_DEPS = $(UV) sync --quiet --locked --inexact --extra dev --group fuzz --python $(PYTHON)
fuzz: $(VENV)/.installed
	@$(FUZZ_DEPS) --no-build-package atheris 2>/dev/null || { \
		echo "no atheris wheel for this Python: building it with clang"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev >/dev/null && \
		CLANG_BIN=clang-14 $(FUZZ_DEPS); }
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Soak benchmark (10 min, 10,000 connections; SOAK_ARGS=--quick for 1 min, --redis for the
# Redis broker): RSS and fds sampled and plotted; docs/soak.md. matplotlib only for the plot.
SOAK_ARGS ?=
soak: $(VENV)/.installed
	$(BENCH_DEPS)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(E2E)/node_modules $(EXAMPLES)/node_modules $(JS)/node_modules .pytest_cache .mypy_cache .ruff_cache .cache/ab27 $(UV_HOME)
