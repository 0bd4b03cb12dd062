# DM: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= .run/data
LISTEN ?= 0.0.0.0:3150

.PHONY: run test lint unit services bench clean agent-binary mutation

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,agent-binary]'
	@touch $(STAMP)

# The single-box node runs in-process when this user can reach the local Docker Engine.
LOCAL_NODE := $(shell test -S /var/run/docker.sock -a -w /var/run/docker.sock && echo --local-node)

## make run: dmd on its embedded defaults (SQLite, in-memory sessions) at http://localhost:3150
run: $(STAMP)
	@mkdir -p $(DATA)
	$(BIN)/dmd serve --data-dir $(DATA) --listen $(LISTEN) $(LOCAL_NODE) $(RUN_FLAGS)

## make test: every test, against real PostgreSQL, MariaDB, Redis, Memcached and Chromium
test: $(STAMP) services lint
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
	$(BIN)/python bench/profile_paths.py
	@test -x dist/dmc || scripts/build-agent.sh
	$(BIN)/python bench/agent_idle.py

clean:
	rm -rf $(VENV) .run build dist *.egg-info

## make agent-binary: dist/dmc, the agent as one file (PyInstaller)
agent-binary: $(STAMP)
	scripts/build-agent.sh
