# The only commands a newcomer needs. Everything runs from a fresh clone as root or a user with the
# system tools already installed; PostgreSQL and Redis are embedded unless DEPOT_DATABASE_URL /
# DEPOT_REDIS_URL point elsewhere.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast bench lint system-deps install clean

run: install system-deps
	$(BIN)/depot run

test: install system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# No fault injection, browser, real apt-get/dnf or slow tests (markers in pyproject.toml).
test-fast: install system-deps
	$(BIN)/python -m pytest -q -n auto -m "not faults and not browser and not clients and not slow" $(PYTEST_ARGS)

bench: install system-deps
	$(BIN)/python -m bench

lint: install
	$(BIN)/python -m ruff check app workers tests bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) var tests/artifacts
