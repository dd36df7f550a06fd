# Two commands do all set-up on a fresh machine (each creates .venv if it is missing):
#   make reproduce   the main job on the embedded default (synthetic data, nothing fetched)
#   make test        the test suite (unit, property, and a tiny real workflow run)
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
# the workflow's rules call `python -m persafl...`: the venv's python must come first
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: reproduce test lint paper benchmark clean

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements-lock.txt -e '.[test]'
	touch $(STAMP)

reproduce: $(STAMP)
	snakemake --cores $(CORES) --configfile config/synthetic.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -rs

paper: $(STAMP)
	snakemake --cores $(CORES)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_clients.py

clean:
	rm -rf results/runs results/partitions results/logs results/benchmarks .snakemake
