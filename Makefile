# leadscore: every task a user or CI runs, in one place. `make` (or `make help`) lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced
SAMPLE_LEADS ?= 20000
DATA_DIR := data/sample
HOST ?= 127.0.0.1
PORT ?= 8000
# Any training config file (paths inside it are relative to it) or a bundled one's name.
CONFIG ?=
TRAIN_CONFIG := $(or $(CONFIG),sample)
LEADSCORE := $(PY) -m leadscore
# The bundled sample config trains on generated data: make it first if it is missing.
SAMPLE_DATA := $(if $(filter sample,$(TRAIN_CONFIG)),$(DATA_DIR)/leads.csv)

# uv from PATH, else installed for this user by pip (a fresh machine has only Python).
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: help
help: ## List the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --user --break-system-packages uv

$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing -p $(PYTHON_VERSION) $(VENV)
	@# Bytecode compiled once at install: the environment may forbid writing .pyc files
	@# (PYTHONDONTWRITEBYTECODE), and then every process, test server and Spark worker
	@# compiled MLflow and pandas from source again (measured: import 13.9 s -> 5.9 s CPU).
	$(UV) pip sync --quiet --compile-bytecode -p $(PY) requirements.lock
	$(UV) pip install --quiet -p $(PY) --no-deps -e .
	@touch $@

.PHONY: setup
setup: $(STAMP) ## Create .venv and install the pinned dependencies (uv; installs uv if missing)

.PHONY: lock
lock: | $(UV) ## Re-pin requirements.lock from pyproject.toml's ranges
	$(UV) pip compile --quiet --no-header pyproject.toml --extra dev --extra spark -p $(PYTHON_VERSION) -o requirements.lock

.PHONY: data
data: $(STAMP) ## Generate the synthetic sample CRM into data/sample (SAMPLE_LEADS=20000)
	$(LEADSCORE) data --n-leads $(SAMPLE_LEADS) --out $(DATA_DIR)

$(DATA_DIR)/leads.csv:
	$(MAKE) data

.PHONY: train
train: $(STAMP) $(SAMPLE_DATA) ## Train CONFIG (default: sample), log to MLflow, register a challenger
	$(LEADSCORE) train --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: cv
cv: $(STAMP) $(SAMPLE_DATA) ## 5-fold cross-validation of the whole pipeline on CONFIG
	$(LEADSCORE) cv --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: tune
tune: $(STAMP) $(SAMPLE_DATA) ## Search settings for CONFIG, nested-CV estimate, write them to it
	$(LEADSCORE) tune --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: eval-real
eval-real: $(STAMP) ## 5-fold cross-validation on ../shared/data/x_education/Leads.csv
	$(LEADSCORE) cv --config x_education

.PHONY: score
score: $(STAMP) $(DATA_DIR)/leads.csv ## Score data/sample with the champion into data/sample/scores.csv (ARGS=--sort ...)
	$(LEADSCORE) score --leads $(DATA_DIR)/leads.csv --actions $(DATA_DIR)/actions.csv --out $(DATA_DIR)/scores.csv $(ARGS)

.PHONY: promote
promote: $(STAMP) ## Move `champion` to CONFIG's challenger if it is not worse (ARGS=--force overrides)
	$(LEADSCORE) promote --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: rollback
rollback: $(STAMP) ## Return CONFIG's `champion` to the previous version
	$(LEADSCORE) rollback --config $(TRAIN_CONFIG)

.PHONY: models
models: $(STAMP) ## List CONFIG's registered model versions and their aliases
	$(LEADSCORE) models --config $(TRAIN_CONFIG)

.PHONY: monitor
monitor: $(STAMP) ## Drift and live calibration of CONFIG's champion on the scoring log (ARGS=--json ...)
	$(LEADSCORE) monitor --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: retrain
retrain: $(STAMP) ## Train from the scoring log, duel the champion on one window, promote if not worse (ARGS=--dry-run)
	$(LEADSCORE) retrain --config $(TRAIN_CONFIG) $(ARGS)

.PHONY: test
test: $(STAMP) ## Run every test, slow ones included (what CI runs), one process per core
	@# Most of the suite waits on servers, subprocesses and fsyncs: two processes on two
	@# cores cut CI's wall time (measured: 573 s in one process on an idle box; 591 s with
	@# two on a box at load 9). --dist loadgroup keeps the Spark tests (xdist_group "spark")
	@# in one process, so one SparkSession (20-90 s to start here) serves them all.
	$(PY) -m pytest -m "slow or not slow" -q -n auto --dist loadgroup

.PHONY: test-fast
test-fast: $(STAMP) ## Run the fast tests only
	$(PY) -m pytest -q -n auto --dist loadgroup

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy over the packages
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

.PHONY: run
run: $(STAMP) ## Set up, train and promote a model on sample data if none exists, then serve
	@$(PY) -m serving.bootstrap || { $(MAKE) --no-print-directory train && $(LEADSCORE) promote; }
	$(LEADSCORE) serve --host $(HOST) --port $(PORT)

.PHONY: serve
serve: $(STAMP) ## Serve the API on HOST:PORT (127.0.0.1:8000); CONFIG=... serves that model
	$(LEADSCORE) serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

.PHONY: bench
bench: $(STAMP) ## Benchmarks: features, generator, training, storage, batch and Spark scoring, replicas, API vs mlflow models serve, webhooks, rescore
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PY) -m benchmarks.features
	$(PY) -m benchmarks.training
	$(PY) -m benchmarks.storage
	$(PY) -m benchmarks.score_inputs
	$(PY) -m benchmarks.board
	$(PY) -m benchmarks.batch_scoring
	$(PY) -m benchmarks.spark_scoring
	$(PY) -m benchmarks.replicas
	$(PY) -m benchmarks.monitor
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.webhooks
	$(PY) -m benchmarks.rescore

.PHONY: bench-quick
bench-quick: $(STAMP) ## The serving table only (service, minimal endpoint, mlflow models serve): 3 s rows, 32 connections
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PY) -m benchmarks.serving --quick

.PHONY: screenshot
screenshot: $(STAMP) ## Re-take docs/board.png and docs/today.png with headless Chromium (needs /usr/bin/chromium)
	LEADSCORE_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/api/test_board_browser.py -m slow -q

.PHONY: mlflow-ui
mlflow-ui: $(STAMP) ## Browse the embedded MLflow store on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

.PHONY: clean
clean: ## Remove generated data, the MLflow store and caches (keeps .venv)
	rm -rf data mlruns mlflow.db .pytest_cache .mypy_cache .ruff_cache
