# Slipway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TARGET ?= local
SPEC   := examples/iris/slipway$(if $(filter-out local,$(TARGET)),-$(TARGET)).yaml
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test lint bench clean-demo

$(BIN)/slipway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,mlflow]'
	@touch $@

## demo: install, train the example model, run the whole pipeline (TARGET=local|docker|kubernetes|cloudrun|lambda)
demo: $(BIN)/slipway
	@$(BIN)/python examples/iris/train.py >/dev/null
	@bash scripts/demo.sh $(TARGET) $(SPEC)

## test: the whole suite, with every service it needs started by the project's scripts
test: $(BIN)/slipway
	bash scripts/services/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n 2 --dist loadgroup \
		-o junit_family=xunit1 --junitxml=benchmarks/out/tests.xml  # read by benchmarks/reliability.py --from-xml

lint: $(BIN)/slipway
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## bench: every benchmark table and the reliability tally (figures go to BENCHMARKS.md; about 60 min)
bench: $(BIN)/slipway
	$(BIN)/pip install -q -e '.[bench]'
	bash scripts/services/test-services.sh
	$(BIN)/python benchmarks/model_server.py --duration 8 --repeat 3
	$(BIN)/python benchmarks/images.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/gate_capacity.py --repeat 3
	$(BIN)/python benchmarks/reliability.py

## clean-demo: stop the demo's servers
clean-demo: $(BIN)/slipway
	$(BIN)/slipway teardown $(SPEC)
	$(BIN)/slipway server stop

.PHONY: server server-down server-status

## server: a Prefect server + worker with prefect.yaml applied, MLflow (SQLite) + the webhook receiver
##         (needs SLIPWAY_WEBHOOK_SECRET and SLIPWAY_API_KEY; see docs/operations.md)
server: $(BIN)/slipway
	@[ -n "$$MLFLOW_TRACKING_URI" ] || export MLFLOW_TRACKING_URI=http://127.0.0.1:$${SLIPWAY_MLFLOW_PORT:-5500}; \
	 bash scripts/services/mlflow.sh up && bash scripts/services/prefect.sh up

## server-down: stop what `make server` started
server-down:
	bash scripts/services/prefect.sh down
	bash scripts/services/mlflow.sh down

## server-status: what of `make server` runs
server-status:
	@bash scripts/services/mlflow.sh status; bash scripts/services/prefect.sh status
