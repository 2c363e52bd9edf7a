# featurestack: `make demo` sets everything up and runs the platform; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when the lock or the project metadata changes.
INSTALLED := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)
# torch comes from pip, not the lock: pip takes the CPU wheel on this disk (or CUDA where present);
# uv would resolve the multi-GB CUDA build from PyPI.
TORCH_VERSION := 2.13.0
DEMO_DAYS ?= 18  # chargebacks arrive up to 14 days late: a model needs older days with final labels
DEMO_TRANSACTIONS_PER_DAY ?= 20000

.PHONY: install demo test test-fast dev status lock clean mlflow-ui

install: $(INSTALLED)

$(INSTALLED): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=/path/to/python3.11)"; exit 1; }
	@command -v java >/dev/null || echo "warning: no java on PATH; Spark needs Java 17"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/featurestack generate --days $(DEMO_DAYS) --transactions-per-day $(DEMO_TRANSACTIONS_PER_DAY)
	$(BIN)/featurestack run

# The package layers first (import-linter, [tool.importlinter] in pyproject.toml), then every test, then
# the writer's compiled RESP kernels again with bounds checks (their own numba cache, so nothing
# compiled without checks is reused): an overrun raises IndexError instead of corrupting memory.
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(VENV)/numba-cache-boundscheck $(BIN)/python -m pytest -q tests/test_resp_bulk.py tests/test_redis_layout.py

# The unit tier only (no services, no Spark/Feast/Dagster), for every change. Only the modules marked
# unit are collected: importing the others (Feast, Dagster, Spark) would cost more than the tests.
test-fast: install
	$(BIN)/python -m pytest -q -m "unit and not slow" $$(grep -l "^pytestmark = pytest.mark.unit$$" tests/test_*.py)

# Feast's paths vs ours on the same generated data (issue 6); e.g. make bench BENCH_ARGS="--scale 10000000"
.PHONY: bench
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

dev: install
	$(BIN)/featurestack dev

status: install
	$(BIN)/featurestack status

# The MLflow tracking UI on the platform's store (MLFLOW_TRACKING_URI, else the sqlite file under the
# state folder), from an environment of its own: full mlflow does not resolve with our pins, and .venv
# holds only mlflow-skinny (no UI). Same version as the client, so the same store schema.
MLFLOW_VERSION := 3.17.2
MLFLOW_UI_VENV := .state/mlflow-ui-venv
MLFLOW_UI_PORT ?= 5000
mlflow-ui: install
	test -x $(MLFLOW_UI_VENV)/bin/mlflow || { $(PYTHON) -m venv $(MLFLOW_UI_VENV) && \
		$(MLFLOW_UI_VENV)/bin/pip install --quiet --disable-pip-version-check mlflow==$(MLFLOW_VERSION) "psycopg[binary]==3.3.9"; }
	STORE=$$($(BIN)/python -c "from core.settings import load_settings as s; c = s(); c.mlflow_artifact_root.mkdir(parents=True, exist_ok=True); print(c.tracking_uri, c.mlflow_artifact_root.as_uri())") && \
	set -- $$STORE && echo "MLflow UI on http://127.0.0.1:$(MLFLOW_UI_PORT) for the store $${1%%://*}://... (Ctrl-C stops it)" && \
	MLFLOW_DISABLE_TELEMETRY=true exec $(MLFLOW_UI_VENV)/bin/mlflow server --backend-store-uri "$$1" \
		--default-artifact-root "$$2" --host 127.0.0.1 --port $(MLFLOW_UI_PORT)

# Re-resolve the pinned dependency set (uv resolves it in seconds; pip backtracks for minutes).
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements.lock

clean:
	rm -rf .state
