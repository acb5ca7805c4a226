# The README's commands. Each target sets up what it needs from nothing (a virtual environment in .venv), with the
# exact versions in constraints.txt; pyproject.toml keeps the compatible ranges.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/prod.yaml
LOCK := constraints.txt

.PHONY: setup test test-unit lint serve prebuild serve-tiny tiny-model lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --no-compile: bytecode is written on first import, for the modules a run imports, instead of for all of torch,
# Ray and transformers at install time (about half the install's time). $(RUN) lets it be written even where the
# environment sets PYTHONDONTWRITEBYTECODE, which would make every process compile its imports again.
RUN := env -u PYTHONDONTWRITEBYTECODE RAY_USAGE_STATS_ENABLED=0
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile --constraint $(LOCK) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup  ## every tier: unit, models (real remote code), integration (in-process Ray), e2e (serve run)
	$(RUN) $(BIN)/python -m pytest -q

test-unit: setup
	$(RUN) $(BIN)/python -m pytest -q tests/unit

lint: setup  ## ruff on everything, mypy on the runtime package
	$(BIN)/ruff check serve_app scripts tests
	$(BIN)/mypy serve_app

serve: setup  ## serve run $(CONFIG) after a check of GPUs and model packages; CONFIG=configs/local.yaml on a CPU
	$(RUN) $(BIN)/python -m serve_app.preflight $(CONFIG)
	$(RUN) $(BIN)/serve run $(CONFIG)

prebuild: setup  ## compile $(CONFIG)'s batch buckets into the compile cache, all at once, before `make serve`
	$(RUN) $(BIN)/python -m serve_app.prebuild --config $(CONFIG)

tiny-model: setup
	$(BIN)/python scripts/make_tiny_model.py .tiny

serve-tiny: tiny-model  ## try every route with no weights to download (dark objects on white only)
	$(RUN) $(BIN)/serve run configs/tiny.yaml

lock:  ## resolve pyproject.toml's ranges afresh in a scratch environment and pin the result in constraints.txt
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet ".[dev]"
	{ echo "# Exact versions tested together (Linux x86_64, CPython $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())')); refresh with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^serve-app[= @]'; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .tiny .pytest_cache
