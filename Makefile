# One command to run, one to test; both create .venv and install from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint typecheck check clean bench bench-smoke

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m order_engine

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

# Everything, the slow scenarios too (CI runs them through ORDER_ENGINE_REQUIRE_SERVICES=1).
test-all: $(STAMP)
	ORDER_ENGINE_SLOW_TESTS=1 $(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Real server processes under a separate load generator; one table, JSON in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench --runs 3 --duration 8 $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
