# DM: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= .run/data
LISTEN ?= 0.0.0.0:3150

.PHONY: run test lint unit services bench clean agent-binary mutation vendor

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,agent-binary]'
	@touch $(STAMP)

# The single-box node runs in-process when this user can reach the local Docker Engine.
LOCAL_NODE := $(shell test -S /var/run/docker.sock -a -w /var/run/docker.sock && echo --local-node)

# The browser libraries the pages load from /static (xterm.js and its fit addon), at the exact
# versions of web/package-lock.json, installed with the machine's npm into build/npm and copied
# into web/static/vendor (git-ignored). Nothing is fetched at run time. npm's download cache is
# /var/cache/dm/npm where that can be written, so a second checkout installs offline.
VENDOR := web/static/vendor/xterm
VENDOR_STAMP := $(VENDOR)/.installed
NPM_DIR := build/npm
NPM_CACHE := $(shell mkdir -p /var/cache/dm/npm 2>/dev/null && test -w /var/cache/dm/npm && echo /var/cache/dm/npm || echo $(CURDIR)/.run/npm-cache)

$(VENDOR_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 or later with npm (e.g. apt-get install nodejs npm); the browser terminal's xterm.js comes from it" >&2; exit 1; }
	@mkdir -p $(NPM_DIR) $(VENDOR)
	cp web/package.json web/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --cache "$(NPM_CACHE)"
	cp $(NPM_DIR)/node_modules/@xterm/xterm/lib/xterm.js $(NPM_DIR)/node_modules/@xterm/xterm/css/xterm.css \
	   $(NPM_DIR)/node_modules/@xterm/addon-fit/lib/addon-fit.js $(VENDOR)/
	@touch $@

## make vendor: the browser libraries (xterm.js) into web/static/vendor
vendor: $(VENDOR_STAMP)

## make run: dmd on its embedded defaults (SQLite, in-memory sessions) at http://localhost:3150
run: $(STAMP) $(VENDOR_STAMP)
	@mkdir -p $(DATA)
	$(BIN)/dmd serve --data-dir $(DATA) --listen $(LISTEN) $(LOCAL_NODE) $(RUN_FLAGS)

## make test: every test, against real PostgreSQL, MariaDB, Redis, Memcached and Chromium
test: $(STAMP) $(VENDOR_STAMP) services lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## make mutation: change the authorization, throttle, quota and ledger code one thing at a time and
## count what the tests notice (tests/mutation/targets.py; MUTATION_TARGETS="throttle quota" for some)
mutation: $(STAMP) services
	$(BIN)/python -m tests.mutation.run --out docs/MUTATION.md $(MUTATION_TARGETS)

lint: $(STAMP)
	$(BIN)/ruff check dmd agent tests bench
	$(BIN)/mypy dmd agent

services:
	@scripts/ensure-services.sh

## make bench: every benchmark; the figures land in docs/BENCHMARKS.md
bench: $(STAMP) services
	$(BIN)/python bench/run.py
	$(BIN)/python bench/agents_load.py --quick
	$(BIN)/python bench/instance_start.py
	$(BIN)/python bench/port_maps.py
	$(BIN)/python bench/ssh_gateway.py
	$(BIN)/python bench/terminal.py
	$(BIN)/python bench/profile_paths.py
	@test -x dist/dmc || scripts/build-agent.sh
	$(BIN)/python bench/agent_idle.py

clean:
	rm -rf $(VENV) .run build dist *.egg-info web/static/vendor

## make agent-binary: dist/dmc, the agent as one file (PyInstaller)
agent-binary: $(STAMP)
	scripts/build-agent.sh
