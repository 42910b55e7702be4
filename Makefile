# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps a local
# virtual environment with every dependency first (only Python 3.11 and make are needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install system-packages test demo chaos bench up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need, installed only when missing: Chromium renders the operator
# pages headless; PostgreSQL runs the database tests a second time (its binaries are not on
# PATH, hence the ls). CI runs as root; elsewhere sudo is asked.
system-packages:
	@MISSING="$$(command -v chromium >/dev/null || echo chromium) \
	  $$(ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || echo postgresql)"; \
	[ -z "$$(echo $$MISSING)" ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$MISSING; }

# Lint and type checks of the product code come first; either one failing fails the target.
test: $(STAMP) system-packages
	$(BIN)/ruff check integration workers web
	$(BIN)/mypy integration workers web
	$(BIN)/python -m pytest $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m stack.cli demo $(ARGS)

chaos: $(STAMP)
	$(BIN)/python -m stack.cli chaos $(ARGS)

# Throughput, polling cost and memory against the limits that bound them (about 10 minutes);
# prints a table and writes docs/benchmarks.md. Never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

up: $(STAMP)
	$(BIN)/python -m stack.cli up $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
