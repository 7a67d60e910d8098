# Facteur — the two commands: `make run` starts Facteur on the embedded default, `make test` runs every test.
# Needs only Python >= 3.11, git and make: uv is bootstrapped with pip when it is missing.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help run test check lint format typecheck proto bench bench-bus bench-webhooks bench-scheduler bench-stages demo sync system-deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Facteur needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv

uv: $(if $(filter $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)

sync: uv ## install Facteur and the development tools into .venv
	$(UV) sync --frozen --python $(PYTHON)

run: uv ## start Facteur on the embedded default (SQLite, local executor) at http://127.0.0.1:8080
	$(UV) sync --frozen --no-dev --inexact --python $(PYTHON)
	$(VENV)/bin/facteur serve

demo: sync ## watch one idea go from planning to reviewed branches on this machine (facteur demo)
	$(VENV)/bin/facteur demo

system-deps: ## install the system packages tests use (curl), when missing and running as root
	@if ! command -v curl >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl; \
	  else echo "curl is missing: install it (tests that need it are skipped locally)"; fi; fi

test: sync system-deps ## install what tests need and run the whole suite
	$(VENV)/bin/pytest

lint: sync ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: sync ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: sync ## mypy --strict over src, tests and the example agent
	$(VENV)/bin/mypy src tests examples/agents

check: lint typecheck test ## lint, type-check and test

proto: sync ## regenerate the protobuf modules from proto/
	$(VENV)/bin/python scripts/gen_proto.py

bench: sync ## run the benchmarks and print their figures (see bench/README.md)
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; fi
	$(VENV)/bin/python bench/codex_tasks.py

bench-webhooks: sync ## benchmark POST /webhooks/github and print its figures (see bench/README.md)
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; fi
	$(VENV)/bin/python bench/webhooks.py

bench-bus: sync ## benchmark the outbox relay and Kafka, print its figures (see bench/README.md)
	$(VENV)/bin/python bench/bus.py

bench-scheduler: sync ## benchmark scheduling passes and dispatch latency, print its figures (see bench/README.md)
	$(VENV)/bin/python bench/scheduler.py

bench-stages: sync ## benchmark Facteur's overhead per stage run (facteur demo), print its figures (see bench/README.md)
	$(VENV)/bin/python bench/stages.py

clean: ## remove the virtual environments and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
