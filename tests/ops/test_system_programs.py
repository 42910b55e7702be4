"""Finding the programs some tests need (tests/system.py): skipped without them, failed on CI."""
from __future__ import annotations

import pytest

from stack import postgres
from tests import system


def executable(directory, name: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("name", system.CHROMIUM_NAMES)
def test_chromium_is_found_under_any_of_its_names(tmp_path, monkeypatch, name):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system.find_chromium() is None
    assert system.missing_debian_packages()[0] == "chromium"
    found = executable(tmp_path, name)
    assert system.find_chromium() == found


def test_pg_ctl_on_path_counts_when_debian_has_none(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert postgres.find_bindir() is None
    executable(tmp_path, "pg_ctl")
    assert postgres.find_bindir() == tmp_path


def test_a_missing_program_skips_its_tests_with_the_reason(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(system, "find_bindir", lambda: None)
    with pytest.raises(pytest.skip.Exception, match=r"PostgreSQL not found.*ran on SQLite only"):
        system.postgres_bindir()


def test_on_ci_a_missing_program_fails_instead(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"Chromium not found.*CI=true"):
        system.chromium()


def test_the_makefile_asks_for_the_debian_packages_of_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(system, "find_bindir", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system.missing_debian_packages() == ["chromium", "postgresql"]
    executable(tmp_path, "google-chrome")
    monkeypatch.setattr(system, "find_bindir", lambda: tmp_path)
    assert system.missing_debian_packages() == []
