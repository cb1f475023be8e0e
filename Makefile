# velocast — the two commands. Both create .venv on a fresh machine (Python 3.11 + pip).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# pytest-xdist processes for `make test` (one per core here); 0 runs the suite in one process
TEST_WORKERS ?= 2
# OpenMP threads sleep while they wait for each other (README: OMP_WAIT_POLICY); velocast sets it too
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test bench lint audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed  ## install and run the main job end to end (no server, no network)
	$(BIN)/velocast demo

test: $(VENV)/.installed-dev  ## install with dev extras and run the full test suite
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev  ## benchmarks -> bench/results/latest.{json,md}
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench dags

audit: $(VENV)/.installed-dev  ## security: bandit on src, pip-audit of the installed packages (needs network)
	$(BIN)/bandit -r src -q
	$(BIN)/pip-audit --skip-editable

clean:
	rm -rf $(VENV) .velocast .pytest_cache
