"""Procfile, Procfile.dev and app.json agree, and production refuses to start unprotected."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from integration.merchants import load_merchants
from integration.settings import load_settings
from tests.config.test_production import GOOD_ENV

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


# --- APP_ENV=production: every process refuses a wrong configuration --------------------------
# The sandbox defaults: no REDIS_URL, no DATABASE_URL, sandbox keys, secrets and URLs.
WRONG = ("REDIS_URL is not set", "DATABASE_URL is unset or SQLite", "ADMIN_TOKEN is not set",
         "merchant demo: LOOP_BASE_URL is unset or the sandbox URL", "merchant demo: LOOP_API_KEY",
         "merchant demo: LOOP_WEBHOOK_SECRETS", "merchant demo: RLM_BASE_URL", "merchant demo: RLM_KEY")


def production_env(data_dir: Path, **changes) -> dict[str, str]:
    """This process's environment with APP_ENV=production and no service configuration."""
    env = {k: v for k, v in os.environ.items()
           if k not in GOOD_ENV and not k.startswith(("LOOP_", "RLM_", "MERCHANT"))}
    env.update(APP_ENV="production", DATA_DIR=str(data_dir), FLOWER_BASIC_AUTH="ops:pw",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def assert_refused_before_starting_anything(output: str, data_dir: Path) -> None:
    assert "APP_ENV=production refuses to start: " in output, output
    for problem in WRONG:
        assert problem in output, problem
    assert not (data_dir / "valkey").exists(), "the embedded Valkey was started"
    assert not (data_dir / "integration.db").exists(), "a SQLite database was created"


@pytest.fixture
def production(monkeypatch, tmp_path):
    from workers import runtime

    runtime._merchants.cache_clear()  # read again from this test's environment
    for name in (*GOOD_ENV, "MERCHANTS_TOML", "MERCHANTS_FILE", "MERCHANT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    yield tmp_path
    runtime._merchants.cache_clear()


def test_the_web_app_names_every_problem_of_a_wrong_production_configuration(production):
    from integration.production import RefusedToStart
    from web import create_app

    with pytest.raises(RefusedToStart) as refused:
        create_app({"SETTINGS": load_settings(), "TESTING": True})
    assert_refused_before_starting_anything(str(refused.value), production)


def test_the_web_app_starts_on_a_correct_production_configuration(production, monkeypatch):
    from web import create_app

    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    app = create_app({"SETTINGS": load_settings(), "MERCHANTS": load_merchants(), "TESTING": True,
                      "SESSIONS": sessionmaker()})  # PostgreSQL is not contacted to build the app
    assert app.config["SETTINGS"].production and "demo" in app.config["MERCHANTS"]


@pytest.mark.parametrize("process", ["worker", "loopworker", "beat", "flower", "release"])
def test_every_procfile_process_refuses_a_wrong_production_configuration(tmp_path, process):
    done = subprocess.run(["/bin/sh", "-c", procfile("Procfile")[process]], cwd=ROOT,
                          env=production_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert_refused_before_starting_anything(done.stdout + done.stderr, tmp_path)


def test_init_db_refuses_a_wrong_production_configuration(production):
    from click.testing import CliRunner

    from cli.main import main

    result = CliRunner().invoke(main, ["init-db"])
    assert result.exit_code == 1
    assert_refused_before_starting_anything(result.output, production)
