# Two commands on a fresh machine: `make run` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on machines without a GPU; on a GPU box the same pin resolves to the CUDA
# build from PyPI. Override to choose another: make run TORCH_SPEC="torch==2.13.0+cu128".
TORCH_SPEC ?= torch==2.13.0
EXTRAS_RUN ?= eval,quant
EXTRAS_TEST ?= eval,dev,quant,cluster
ARGS ?=

.PHONY: run test report lint clean sandbox-tools install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# HumanEval completions run in bubblewrap; install it where we can (root with apt), else the
# scorer falls back to rlimits with a loud warning and records that in the row.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)); } || \
	  echo "warning: bubblewrap not installed; HumanEval falls back to rlimits-only isolation"

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python sandbox-tools
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS_RUN)]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python sandbox-tools
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS_TEST)]"
	touch $@

# What deploy/nightly.sh runs after `git pull`: reinstalls only when pyproject.toml changed.
install: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python -m bench $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(ARGS)

report: $(VENV)/.installed-run
	$(BIN)/python -m bench.report $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check bench tests

clean:
	rm -rf $(VENV) outputs results/*/ reports/*.md reports/*.png
