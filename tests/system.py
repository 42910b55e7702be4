"""Programs some tests need that come from the operating system, not from PyPI: Chromium (the
operator pages in a browser) and PostgreSQL's server (every database test a second time).

`make test` installs Debian's packages for whichever is missing when it can do so without a
prompt. A test that needs one that is still missing is skipped with one line naming it (pytest's
summary folds all of them into that line), or fails when CI=true: a CI machine must run them.
`python -m tests.system` prints the Debian packages of the missing ones, for the Makefile.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from stack.postgres import find_bindir

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
MISSING_POSTGRES = ("PostgreSQL not found (pg_ctl on PATH or in /usr/lib/postgresql/*/bin): the database "
                    "tests ran on SQLite only; install postgresql to run them")
MISSING_CHROMIUM = (f"Chromium not found ({', '.join(CHROMIUM_NAMES)} on PATH): the operator pages were "
                    "not rendered in a browser; install chromium to run them")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> NoReturn:
    """Skip the test for want of a program, or fail it on CI, where every test must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing program fails the run)", pytrace=False)
    pytest.skip(reason)


def postgres_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        missing(MISSING_POSTGRES)
    return bindir


def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        missing(MISSING_CHROMIUM)
    return binary


def missing_debian_packages() -> list[str]:
    wanted = {"chromium": find_chromium() is not None, "postgresql": find_bindir() is not None}
    return [package for package, found in wanted.items() if not found]


if __name__ == "__main__":
    print(" ".join(missing_debian_packages()))
