"""`rlm-loop merchants` subcommands: merchants kept as data, secrets never printed."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from tests.store.test_merchant_store import HOOK, LOOP_KEY, RLM_KEY, toml


@pytest.fixture
def run(cli, tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MERCHANT_KEYS": Fernet.generate_key().decode(),
           "MERCHANTS_FILE": None, "MERCHANTS_TOML": None, "APP_ENV": None}
    assert cli("init-db", env=env).exit_code == 0

    def invoke(*args: str, **extra):
        from click.testing import CliRunner

        from cli.main import main
        return CliRunner().invoke(main, list(args), env={**env, **extra})
    return invoke


def no_secret(output: str) -> None:
    for secret in (LOOP_KEY, RLM_KEY, HOOK):
        assert secret not in output


def test_import_is_idempotent_and_list_shows_the_stored_merchants(run, tmp_path):
    file = tmp_path / "m.toml"
    file.write_text(toml("acme"))
    first = run("merchants", "import", str(file))
    assert first.exit_code == 0 and first.output.startswith("added     acme\n")
    again = run("merchants", "import", str(file))
    assert again.exit_code == 0 and "unchanged acme" in again.output
    listed = run("merchants")
    assert listed.exit_code == 0 and listed.output.startswith("acme\n")  # the table wins: no demo
    assert run("merchants", "list").output == listed.output
    no_secret(first.output + again.output + listed.output)


def test_add_refuses_a_stored_name(run, tmp_path):
    file = tmp_path / "m.toml"
    file.write_text(toml("acme"))
    assert run("merchants", "add", "--from-toml", str(file)).exit_code == 0
    again = run("merchants", "add", "--from-toml", str(file))
    assert again.exit_code == 1 and "already stored: acme" in again.output


def test_update_validates_and_names_the_key(run, tmp_path):
    (tmp_path / "m.toml").write_text(toml("acme"))
    run("merchants", "import", str(tmp_path / "m.toml"))
    bad = run("merchants", "update", "acme", "--set", "criteria.expiry_days=soon")
    assert bad.exit_code == 1 and "criteria.expiry_days" in bad.output
    unknown = run("merchants", "update", "acme", "--set", "colour=blue")
    assert unknown.exit_code == 1 and "colour" in unknown.output
    good = run("merchants", "update", "acme", "--set", "criteria.expiry_days=14", "--set", "rlm_company=91")
    assert good.exit_code == 0 and good.output == "acme: updated\n"
    assert "company 91" in run("merchants").output
    assert run("merchants", "update", "nobody", "--set", "rlm_company=1").exit_code == 1


def test_show_masks_and_disable_stops_listing(run, tmp_path):
    (tmp_path / "m.toml").write_text(toml("acme"))
    run("merchants", "import", str(tmp_path / "m.toml"))
    shown = run("merchants", "show", "acme")
    assert shown.exit_code == 0
    no_secret(shown.output)
    assert json.loads(shown.output)["config"]["rlm_key"] == "****" + RLM_KEY[-4:]
    assert run("merchants", "disable", "acme").output == "acme: disabled\n"
    assert run("merchants", "disable", "acme").output == "acme: already disabled\n"
    listed = run("merchants")
    assert listed.exit_code == 0 and listed.output == "acme (stored, disabled)\n"
    assert run("merchants", "enable", "acme").exit_code == 0
    assert run("merchants", "show", "nobody").exit_code == 1


def test_without_merchant_keys_import_is_refused_naming_the_variable(run, tmp_path):
    (tmp_path / "m.toml").write_text(toml("acme"))
    result = run("merchants", "import", str(tmp_path / "m.toml"), MERCHANT_KEYS=None)
    assert result.exit_code == 1 and "MERCHANT_KEYS is not set" in result.output


def test_rotate_keys_re_encrypts_with_the_first_key(run, tmp_path):
    (tmp_path / "m.toml").write_text(toml("acme"))
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert run("merchants", "import", str(tmp_path / "m.toml"), MERCHANT_KEYS=old_key).exit_code == 0
    assert run("merchants", "show", "acme", MERCHANT_KEYS=new_key).exit_code == 1
    result = run("merchants", "rotate-keys", MERCHANT_KEYS=f"{new_key},{old_key}")
    assert result.exit_code == 0 and "1 merchant(s)" in result.output
    assert run("merchants", "show", "acme", MERCHANT_KEYS=new_key).exit_code == 0
    assert run("merchants", "show", "acme", MERCHANT_KEYS=old_key).exit_code == 1


def test_each_change_names_its_operator_in_the_merchants_kept_report(run, tmp_path):
    from integration.ops import onboarding_record
    from integration.store.db import session_factory

    (tmp_path / "m.toml").write_text(toml("acme"))
    assert run("merchants", "add", "--from-toml", str(tmp_path / "m.toml"), "--operator", "alice").exit_code == 0

    def last_change() -> dict:
        with session_factory(f"sqlite:///{tmp_path / 'm.db'}")() as s:
            return onboarding_record.last_reports(s, "acme")["acme"]["change"]

    assert (last_change()["operator"], last_change()["summary"]) == ("alice", "add: added acme; updated -")
    assert run("merchants", "update", "acme", "--set", "mode=shadow", OPERATOR_NAME="bob").exit_code == 0
    assert (last_change()["operator"], last_change()["summary"]) == ("bob", "update: updated (mode)")
    assert run("merchants", "disable", "acme", "--operator", "carol").exit_code == 0
    assert (last_change()["operator"], last_change()["summary"]) == ("carol", "disable: disabled")
    assert run("merchants", "disable", "acme", "--operator", "dave").exit_code == 0  # nothing changed
    assert last_change()["operator"] == "carol"
    bad = run("merchants", "enable", "acme", "--operator", "Not A Name")
    assert bad.exit_code == 1 and "operator name" in bad.output
