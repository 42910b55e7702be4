# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps a local
# virtual environment with every dependency first (only Python 3.11 and make are needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install test demo up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m stack.cli demo $(ARGS)

up: $(STAMP)
	$(BIN)/python -m stack.cli up $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
