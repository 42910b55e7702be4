"""Procfile, Procfile.dev and app.json agree, and production refuses to start unprotected."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from integration.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def procfile(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def program(command: str) -> list[str]:
    """A command up to its first long option (after any `wait && ` in front of it)."""
    words = command.split("&& ")[-1].split()
    return words[:next((i for i, w in enumerate(words) if w.startswith("--")), len(words))]


def test_release_migrates_and_production_runs_no_sandbox():
    prod = procfile("Procfile")
    assert prod["release"] == "alembic upgrade head"
    assert set(prod) == {"release", "web", "worker", "loopworker", "beat", "flower"}
    assert not any("sandbox" in cmd or "stack.cli" in cmd for cmd in prod.values())


def test_the_dev_procfile_runs_every_production_process_plus_valkey_and_the_sandboxes():
    prod, dev = procfile("Procfile"), procfile("Procfile.dev")
    assert set(dev) == (set(prod) - {"release"}) | {"valkey", "loop", "rlm"}
    for name in set(prod) - {"release"}:  # the same program and queues; local ports and sizes
        assert program(dev[name]) == program(prod[name]), name
    for port in ("8000", "8001", "8002", "5555"):
        assert any(port in cmd for cmd in dev.values()), port


def test_app_json_scales_every_process_with_exactly_one_beat():
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == set(procfile("Procfile")) - {"release"}
    assert app["formation"]["beat"]["quantity"] == 1
    plans = [addon["plan"] for addon in app["addons"]]
    assert any(p.startswith("heroku-postgresql") for p in plans)
    assert any(p.startswith("heroku-redis") for p in plans)
    assert app["env"]["APP_ENV"]["value"] == "production"
    assert app["env"]["ADMIN_TOKEN"]["generator"] == "secret"


def test_flower_refuses_to_start_without_basic_auth():
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(["/bin/sh", "-c", procfile("Procfile")["flower"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "set FLOWER_BASIC_AUTH" in done.stderr


def test_the_web_app_refuses_to_start_in_production_without_admin_token(monkeypatch):
    from web import create_app

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="ADMIN_TOKEN"):
        create_app({"SETTINGS": load_settings()})
