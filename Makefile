# `make run` sets everything up and runs the system; `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# What is installed: the project alone (run, retrain), or with its dev extra (test, bench).
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed

.PHONY: install install-dev run retrain test bench

# A current pip, once per venv: the one Python 3.11 comes with takes far longer to install these
# packages than a current one does, upgrade included (README, "First start").
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency lists change.
$(INSTALLED): setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(INSTALLED)

# The dev extra includes the project, so one pip call serves both stamps.
$(DEV_INSTALLED): setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED) $(DEV_INSTALLED)

install: $(INSTALLED)

install-dev: $(DEV_INSTALLED)

run: install
	$(BIN)/python scripts/run_system.py

# One retrain, recorded in the Dagster instance the UI of `make run` shows (DAGSTER_HOME).
retrain: install
	$(BIN)/python scripts/run_system.py retrain

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Not a test: prints wall time and process-tree memory of the job against the bare DuckDB count.
bench: install-dev
	$(BIN)/python bench/bench_retrain.py
