"""CLI commands that need no running stack (tests/ops/test_actions.py covers the actions)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from integration.store.db import get_engine, session_factory
from integration.store.models import Return, create_all
from integration.workflow import lifecycle as lc

ROOT = Path(__file__).resolve().parents[2]


def test_merchants_lists_the_configuration(cli):
    result = cli("merchants", env={"MERCHANTS_FILE": None, "APP_ENV": None})
    assert result.exit_code == 0
    assert result.output.startswith("demo\n")
    assert "company 90, division 10, returns warehouse 1" in result.output
    assert "demo-loop-key" not in result.output and "demo-webhook-secret" not in result.output


def test_merchants_names_the_bad_key_of_an_invalid_file(cli, tmp_path):
    bad = tmp_path / "merchants.toml"
    bad.write_text('[[merchants]]\nname = "acme"\nloop_base_url = "not a url"\n')
    result = cli("merchants", env={"MERCHANTS_FILE": str(bad)})
    assert result.exit_code == 1
    assert "merchant #1" in result.output and "loop_base_url" in result.output


def test_merchants_refuses_sandbox_defaults_in_production(cli):
    result = cli("merchants", env={"MERCHANTS_FILE": None, "APP_ENV": "production"})
    assert result.exit_code == 1
    assert "FAIL   LOOP_BASE_URL is unset or the sandbox URL http://127.0.0.1:8001" in result.output
    assert "FAIL   LOOP_API_KEY is unset or the sandbox key" in result.output
    assert "FAIL   LOOP_WEBHOOK_SECRETS is unset or holds the sandbox secret" in result.output



@pytest.fixture
def database(tmp_path) -> dict:
    """A SQLite database holding one finished return, and a broker nothing listens on (the
    publisher connects only when an action queues a step, and none does here)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    create_all(get_engine(url))
    with session_factory(url)() as s:
        s.add(Return(merchant="demo", loop_return_id="21", state=lc.COMPLETE, units=[], rma_lines=[]))
        s.commit()
    return {"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:9/0", "MERCHANTS_FILE": None,
            "APP_ENV": None}

def test_actions_print_their_message_and_fail_only_when_the_target_does_not_exist(cli, database):
    nothing = cli("retry", "21", env=database)
    assert (nothing.exit_code, nothing.output) == (0, "return 21 is complete; nothing to retry\n")
    refused = cli("redecide", "21", env=database)
    assert refused.exit_code == 0 and "can be re-decided" in refused.output
    unknown = cli("retry", "404", "--merchant", "demo", env=database)
    assert (unknown.exit_code, unknown.output) == (1, "Error: no return 404 for merchant demo\n")
    missing_event = cli("replay", "404", env=database)
    assert (missing_event.exit_code, missing_event.output) == (1, "Error: no webhook event 404\n")


def test_the_operator_cli_does_not_import_the_local_stack():
    probe = "import sys, cli.main; print(sorted({m.split('.')[0] for m in sys.modules} & {'stack', 'sandbox', 'web'}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_python_m_cli_and_python_m_stack_cli_run_the_same_operator_commands():
    for module in ("cli", "stack.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for command in ("init-db", "status", "retry", "redecide", "replay", "backfill", "merchants",
                        "doctor", "demo", "up"):
            assert f"  {command} " in done.stdout, (module, command)
    assert "  chaos " in done.stdout and "  dev " in done.stdout  # the local stack's own
