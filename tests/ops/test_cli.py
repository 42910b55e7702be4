"""CLI commands that need no running stack (tests/ops/test_actions.py covers the actions)."""
from __future__ import annotations


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

