# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/actstats demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check actstats tests benchmarks examples
	$(BIN)/ruff format --check actstats tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format actstats tests benchmarks examples
	$(BIN)/ruff check --fix actstats tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/collect.py
	$(BIN)/python benchmarks/fit.py
	$(BIN)/python benchmarks/sample.py
	$(BIN)/python benchmarks/realism.py
	$(BIN)/python benchmarks/realism_imagenet.py

mutation: $(STAMP)
	$(BIN)/python benchmarks/mutation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mutation
