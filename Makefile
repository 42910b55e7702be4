# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps a local
# virtual environment with every dependency first (only Python 3.11 and make are needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
# The locks: requirements.txt is what Heroku installs (the runtime dependencies, the PostgreSQL
# driver and sentry-sdk, used only when SENTRY_DSN is set), requirements-dev.txt is what `make
# install` installs (those plus the dev extra). Both pin every package with its hashes; `make
# lock` writes them from pyproject.toml.
LOCKS := requirements.txt requirements-dev.txt
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

.PHONY: install lock system-packages test demo chaos bench up clean

# Exactly the locked packages, hashes checked; then the project itself, editable, with no
# dependencies of its own (built with the locked setuptools: nothing unpinned is fetched).
# `pip check` catches a lock that no longer satisfies pyproject.toml (run `make lock`).
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(BIN)/python -m pip check --disable-pip-version-check >/dev/null || { $(BIN)/python -m pip check; \
	  echo "requirements-dev.txt does not satisfy pyproject.toml: run \`make lock\`" >&2; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# Re-resolve both locks from pyproject.toml: pins that still satisfy it are kept. To move to
# newer releases: `make lock ARGS=--upgrade` (everything) or `ARGS="--upgrade-package celery"`.
# pip-compile (pip-tools) comes from the dev lock; only the venv has to exist for it.
lock:
	@test -x $(BIN)/pip-compile || { $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt; }
	$(PIP_COMPILE) $(ARGS) --extra postgres --extra sentry -o requirements.txt pyproject.toml
	$(PIP_COMPILE) $(ARGS) --extra postgres --extra sentry --extra dev -c requirements.txt -o requirements-dev.txt pyproject.toml

# Programs some tests need from the system: Chromium (`chromium`, `chromium-browser` or
# `google-chrome`) renders the operator pages headless; PostgreSQL's server (`pg_ctl` on PATH or
# in Debian's /usr/lib/postgresql/*/bin) runs the database tests a second time. tests/system.py
# finds them and names the Debian packages of those missing; they are installed only when that
# needs no prompt (apt-get, and root or passwordless sudo). Otherwise their tests are skipped,
# one line each in pytest's summary, except under CI=true, where they fail.
system-packages: $(STAMP)
	@MISSING="$$($(BIN)/python -m tests.system)"; [ -n "$$MISSING" ] || exit 0; \
	if ! command -v apt-get >/dev/null 2>&1; then WHY="no apt-get here"; \
	elif [ "$$(id -u)" = 0 ]; then SUDO=""; \
	elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else WHY="not root, and no passwordless sudo"; fi; \
	if [ -n "$$WHY" ]; then \
	  echo "make test: not installing $$MISSING ($$WHY): the tests that need it are skipped (failed if CI=true)"; \
	else \
	  echo "make test: installing Debian's $$MISSING"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$MISSING; \
	fi

# Lint and type checks of the product code come first; either one failing fails the target.
test: $(STAMP) system-packages
	$(BIN)/ruff check integration workers web cli
	$(BIN)/mypy integration workers web cli
	$(BIN)/python -m pytest $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m stack.cli demo $(ARGS)

chaos: $(STAMP)
	$(BIN)/python -m stack.cli chaos $(ARGS)

# Throughput, polling and sweeping cost, memory, merchant fairness and the receipt -> Loop action
# latency against the limits that bound them (about 16 minutes on 2 CPUs: the latency phase runs
# at the 60 s default poll interval, about 3 of them); on SQLite, or with ARGS="--db postgres" on a throwaway PostgreSQL cluster. Prints a
# table, keeps each database's figures in docs/benchmarks-<db>.json and writes docs/benchmarks.md
# from both. Never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

up: $(STAMP)
	$(BIN)/python -m stack.cli up $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
