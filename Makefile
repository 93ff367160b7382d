# vidpulse: the front door. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install vidpulse with its test, dev and bench extras

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "vidpulse needs Python 3.11 or newer (found $$($(PYTHON) --version 2>&1)); set PYTHON=python3.x"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,bench]'
	@touch $(STAMP)

run: install ## start Redis/PostgreSQL if needed, migrate, run ingest and all processors (Ctrl-C stops; PORT=8000)
	@env=$$($(BIN)/python -m vidpulse.devservices --state-dir .local) || exit 1; \
	eval "$$env"; exec $(BIN)/vidpulse run --port $(PORT)

test: install ## run the test suite against real Redis and PostgreSQL (started if needed)
	$(BIN)/python -m tests.browser_deps
	$(BIN)/pytest

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## run the benchmarks side by side and print the table
	@env=$$($(BIN)/python -m vidpulse.devservices --state-dir .local) || exit 1; \
	eval "$$env"; exec $(BIN)/python -m bench

clean: ## remove the virtualenv and caches (keeps .local data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
