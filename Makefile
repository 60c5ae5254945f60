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

.PHONY: setup repro test lint format docs bench sweep select report plots-check serve serve-check clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,serve,docs]'
	@touch $(STAMP)

repro: setup
	@test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -x -q -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check src stages tests benchmarks scripts
	$(BIN)/ruff format --check src stages tests benchmarks scripts

format: setup
	$(BIN)/ruff format src stages tests benchmarks scripts
	$(BIN)/ruff check --fix src stages tests benchmarks scripts

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or
# anchor fails the build (tests/test_docs.py builds it in `make test` as well).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The standard benchmark (params.yaml: sweep.models x sweep.categories), queued and run.
# `repro` first: queued runs restore unchanged stages from the cache, which a fresh clone
# (or a params edit committed without `dvc repro`) does not have yet.
# Several machines: `make sweep SHARD=1/3` on the first of three (README, Scaling out).
sweep: repro
	$(BIN)/python -m anomaly sweep --run $(if $(SHARD),--shard $(SHARD))

# Choose the detector for the data params.yaml names (or ARGS="-S dataset.source=..."):
# every select.candidates entry as an experiment, ranked by the label-free figure
# (val_synthetic.* in metrics/eval.json), reports/selection.md, the winner applied.
select: repro
	$(BIN)/python -m anomaly select $(ARGS)

# reports/: every experiment of HEAD (add REVS="--rev main --rev other" for branches);
# with sweep.remote set, the experiments other machines pushed there are pulled first.
report: setup
	$(BIN)/python -m anomaly report $(REVS)

# Render `dvc plots diff` in headless Chromium and check the charts were drawn.
plots-check: setup
	$(BIN)/python scripts/check_plots_browser.py $(REVS)

# Serve the active model's bundle (after `make repro`): http://127.0.0.1:8000/
serve: setup
	$(BIN)/python -m anomaly serve $(ARGS)

# Drive the service's page in headless Chromium (playwright with the system's Chromium):
# drop two images, check each verdict and overlay appear, save a screenshot.
serve-check: setup
	$(BIN)/python -m pip install --quiet -e '.[browser]'
	$(BIN)/python scripts/check_serve_page.py $(ARGS)

# Not part of `make test`: per-model throughput and memory, then every stage's wall time
# and peak RSS and the 4x data memory check (tests/test_tooling.py smoke-tests both),
# predict on 1-36 megapixel images, and the service under 32 clients (after make repro).
bench: setup
	mkdir -p benchmarks/results
	rm -f benchmarks/results/bench_models.jsonl
	$(BIN)/python benchmarks/bench_models.py --out benchmarks/results/bench_models.jsonl
	$(BIN)/python benchmarks/bench_stages.py --out benchmarks/results/bench_stages.json
	$(BIN)/python benchmarks/bench_huge.py --out benchmarks/results/bench_huge.json
	$(BIN)/python benchmarks/bench_serve.py --out benchmarks/results/bench_serve.json

clean-venv:
	rm -rf $(VENV)
