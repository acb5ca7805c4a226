# The README's commands. Each target sets up what it needs from nothing (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/prod.yaml
# 1: HAProxy takes the HTTP port and forwards straight to the ingress replicas (README, "Lower latency").
HAPROXY ?= 0

.PHONY: setup test test-unit lint serve prebuild serve-tiny tiny-model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup  ## all three tiers: unit, integration (in-process Ray), e2e (serve run subprocess)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check serve_app scripts tests

serve: setup  ## serve run $(CONFIG); make serve CONFIG=configs/local.yaml for a CPU machine; HAPROXY=1
	RAY_USAGE_STATS_ENABLED=0 RAY_SERVE_ENABLE_HA_PROXY=$(HAPROXY) $(BIN)/serve run $(CONFIG)

prebuild: setup  ## compile $(CONFIG)'s batch buckets into the compile cache, all at once, before `make serve`
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m serve_app.prebuild --config $(CONFIG)

tiny-model: setup
	$(BIN)/python scripts/make_tiny_model.py .tiny

serve-tiny: tiny-model  ## try every route with no weights to download (dark objects on white only)
	RAY_USAGE_STATS_ENABLED=0 RAY_SERVE_ENABLE_HA_PROXY=$(HAPROXY) $(BIN)/serve run configs/tiny.yaml

clean:
	rm -rf $(VENV) .tiny .pytest_cache
