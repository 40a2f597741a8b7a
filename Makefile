# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Both create the virtualenv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint fast slow bench venv clean

venv: $(STAMP)

# setup.py builds the cleaner's optional C extension: a change to it or to its source rebuilds.
$(STAMP): pyproject.toml setup.py src/ackly/log/_clean_scan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

tests/clients/js/node_modules/.installed: tests/clients/js/package.json tests/clients/js/package-lock.json
	cd tests/clients/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(STAMP)
	$(BIN)/ackly serve --host 127.0.0.1 --port 9092 --data-dir ./data --broker-id 0 --config admin.listener=127.0.0.1:9644 --config admin.console.reports.dir=./verify-reports

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

slow: $(STAMP) tests/clients/js/node_modules/.installed
	$(BIN)/pytest -q -m slow

test: lint $(STAMP) tests/clients/js/node_modules/.installed
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/produce_consume.py

clean:
	rm -rf $(VENV) tests/clients/js/node_modules
