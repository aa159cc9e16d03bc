# The only commands a newcomer needs. Everything runs from a fresh clone as root or a user with the
# system tools already installed; PostgreSQL and Redis are embedded unless DEPOT_DATABASE_URL /
# DEPOT_REDIS_URL point elsewhere.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One venv, two installs: the service alone (`make run`), or with the test extras (pytest, Playwright,
# schemathesis, ruff: `make test`, test-fast, lint, bench). Each has its stamp, out of date when
# pyproject.toml changes. The test install stamps both, since it holds the service's dependencies too:
# `make run` after `make test` installs nothing, and `make test` after `make run` adds only the extras.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-fast bench lint system-deps install install-test clean

run: install
	@scripts/system-deps.sh run
	$(BIN)/depot run

# Two test processes: most of the suite's time is waiting (real processes, timers, browsers, apt-get), so
# two halve it on a 2-core machine; each process has a database and a Redis db of its own.
TEST_WORKERS ?= 2

test: install-test system-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# No fault injection, browser, real apt-get/dnf or slow tests (markers in pyproject.toml). At most 7 test
# processes: each takes a Redis db of its own (tests/conftest.py), and Redis has 16.
test-fast: install-test system-deps
	$(BIN)/python -m pytest -q -n auto --maxprocesses 7 -m "not faults and not browser and not clients and not slow" $(PYTEST_ARGS)

bench: install-test system-deps
	$(BIN)/python -m bench

lint: install-test
	$(BIN)/python -m ruff check app workers tests bench

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(RUN_STAMP) $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) var tests/artifacts
