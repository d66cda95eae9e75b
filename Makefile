# One source of truth for people and CI: `make demo` and `make test` each build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	ORCH_DATABASE_URL=$${ORCH_DATABASE_URL:-sqlite:///orch.db} PATH=$(CURDIR)/$(BIN):$$PATH bash examples/demo.sh

test: $(STAMP)
	$(BIN)/ruff check orchestrator policies simulations tests benchmarks examples
	$(BIN)/mypy
	OPENBLAS_NUM_THREADS=1 $(BIN)/pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check orchestrator policies simulations tests benchmarks examples
	$(BIN)/ruff format --check orchestrator policies simulations tests benchmarks examples

docs: $(STAMP)
	$(BIN)/python -m orchestrator.cli.docgen > docs/cli.md

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/bench_run.py --policy uniform --policy lints --policy vw
	$(BIN)/python benchmarks/bench_policies.py
	$(BIN)/python benchmarks/bench_segments.py
	$(BIN)/python benchmarks/bench_uplift.py

clean:
	rm -rf $(VENV) orch.db .pytest_cache .mypy_cache .hypothesis
