# Slipway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SPEC   := examples/iris/slipway.yaml
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test lint bench clean-demo

$(BIN)/slipway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,mlflow]'
	@touch $@

## demo: install, train the example model, run the whole pipeline on the local target
demo: $(BIN)/slipway
	@$(BIN)/python examples/iris/train.py >/dev/null
	@bash scripts/demo.sh $(SPEC)

## test: the whole suite, with every service it needs started by the project's scripts
test: $(BIN)/slipway
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(BIN)/slipway
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## bench: the side-by-side benchmarks (figures go to BENCHMARKS.md)
bench: $(BIN)/slipway
	$(BIN)/python benchmarks/serving.py

## clean-demo: stop the demo's servers
clean-demo: $(BIN)/slipway
	$(BIN)/slipway teardown $(SPEC)
