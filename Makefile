# `make run` sets everything up and runs the system; `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run retrain test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency lists change.
$(INSTALLED): setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

run: install
	$(BIN)/python scripts/run_system.py

# One retrain, recorded in the Dagster instance the UI of `make run` shows (DAGSTER_HOME).
retrain: install
	$(BIN)/python scripts/run_system.py retrain

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Not a test: prints wall time and process-tree memory of the job against the bare DuckDB count.
bench: install
	$(BIN)/python bench/bench_retrain.py
