# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps a local
# virtual environment with every dependency first (only Python 3.11 and make are needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install system-packages test demo up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need, installed only when missing: Chromium renders the operator
# pages headless (CI runs as root; elsewhere sudo is asked).
system-packages:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m stack.cli demo $(ARGS)

up: $(STAMP)
	$(BIN)/python -m stack.cli up $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
