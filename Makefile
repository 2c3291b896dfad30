# mailprime — the two commands a fresh machine needs are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= var

.PHONY: run test lint bench venv peers clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml setup.py src/mailprime/message/_relaxed.c src/mailprime/message/_qp.c src/mailprime/storage/sql/_lines.c | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Set up (first use: `mailprime init` into ./var) and start the server.
run: $(STAMP)
	@if [ ! -f $(DATA)/mailprime.toml ]; then \
	  $(BIN)/mailprime init --dir $(DATA) --domain example.test --hostname localhost --sandbox; fi
	$(BIN)/mailprime serve --config $(DATA)/mailprime.toml

# Debian packages the interop tests and benchmarks talk to (skipped where apt is absent).
peers:
	@bash scripts/install-peers.sh

test: $(STAMP) peers
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench || true
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) peers
	$(BIN)/python -m bench --case all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
