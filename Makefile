# Two commands on a fresh machine: `make repro` and `make test`.
# `make setup` creates .venv with pip when missing and reuses it otherwise.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: make it the venv's for every target.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup repro test lint format bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

repro: setup
	@test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -x -q -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

format: setup
	$(BIN)/ruff format src stages tests benchmarks
	$(BIN)/ruff check --fix src stages tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_models.py

clean-venv:
	rm -rf $(VENV)
