# Every target creates .venv on first use; nothing is installed outside it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test test-fast bench binary clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/kuma-cp run $(ARGS)

test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(DEVSTAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(DEVSTAMP)
	$(BIN)/python tests/perf/api_bench.py

binary: $(DEVSTAMP)
	@echo "make binary: the frozen build is issue #6 and not built yet" >&2; exit 2

clean:
	rm -rf $(VENV) build/out dist .pytest_cache
