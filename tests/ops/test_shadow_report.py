"""The shadow mode agreement report: the pure function, `rlm-loop shadow report`, the /ops/shadow
page (operator logins as the other pages), and switching a stored merchant's mode with
`rlm-loop merchants update`. SQLite and PostgreSQL. (tests/workflow/test_shadow.py drives the
returns themselves through the sandboxes.)"""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from integration.ops.shadow import ShadowReturn, agreement_report, shadow_returns
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from tests.ops.test_pages import TOKEN, basic
from tests.ops.test_pages_operators import ALICE
from tests.store.test_merchant_store import toml

DAY1, DAY2 = datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 20, 12, tzinfo=UTC)
DAMAGED = {"action": "flag", "rules": ["condition"], "summary": "received damaged 1 x CB11D10-BLUE-M",
           "discrepancies": [{"rule": "condition", "text": "received damaged 1 x CB11D10-BLUE-M"}]}
CLEAN = {"action": "process", "rules": [], "discrepancies": [],
         "summary": "every authorized unit received in accepted condition"}


def shadow_return(sessions, merchant: str, loop_id: str, decided_at: datetime, detail: dict,
                  person: str | None, state: str = lc.SHADOW_DECIDED) -> None:
    with sessions() as s:
        s.add(Return(merchant=merchant, loop_return_id=loop_id, state=state, units=[], rma_lines=[],
                     rma_number=3100 + int(loop_id) % 100, decision=detail["action"], decision_detail=detail,
                     loop_note="RLM RA 3101: received damaged 1 x CB11D10-BLUE-M" if detail is DAMAGED else None,
                     shadow_decided_at=decided_at, person_action=person,
                     person_acted_at=decided_at if person else None))
        s.commit()


@pytest.fixture
def decided(sessions):
    """demo: 4 decided (1 agreed, 2 disagreed, 1 waiting); acme: 1 agreed; one live return."""
    shadow_return(sessions, "demo", "101", DAY1, CLEAN, "closed", lc.COMPLETE)
    shadow_return(sessions, "demo", "102", DAY1, DAMAGED, "closed", lc.COMPLETE)
    shadow_return(sessions, "demo", "103", DAY2, CLEAN, "review", lc.COMPLETE)
    shadow_return(sessions, "demo", "104", DAY2, CLEAN, None)
    shadow_return(sessions, "acme", "201", DAY2, DAMAGED, "review", lc.COMPLETE)
    with sessions() as s:
        s.add(Return(merchant="demo", loop_return_id="900", state=lc.COMPLETE, units=[], rma_lines=[],
                     decision="process", decision_detail=CLEAN))
        s.commit()
    return sessions


def test_the_report_counts_per_merchant_and_lists_each_disagreement_with_our_reasons(decided):
    with decided() as s:
        acme, demo = agreement_report(shadow_returns(s))
    assert (acme.merchant, acme.decided, acme.agreed, acme.disagreed, acme.waiting) == ("acme", 1, 1, 0, 0)
    assert (demo.decided, demo.agreed, demo.disagreed, demo.waiting) == (4, 1, 2, 1)
    assert demo.agreement_rate == pytest.approx(1 / 3)
    flagged_not, processed_not = demo.disagreements
    assert (flagged_not.loop_return_id, flagged_not.would, flagged_not.person) == ("102", "flag",
                                                                                    "processed or closed")
    assert flagged_not.rules == ["condition"] and flagged_not.reasons == ["received damaged 1 x CB11D10-BLUE-M"]
    assert (processed_not.loop_return_id, processed_not.would, processed_not.person) == ("103", "process",
                                                                                          "flagged")


def test_since_and_merchant_narrow_the_report(decided):
    with decided() as s:
        [demo] = agreement_report(shadow_returns(s, merchant="demo", since=DAY2))
    assert (demo.decided, demo.agreed, demo.disagreed, demo.waiting) == (2, 0, 1, 1)


def test_the_report_is_a_pure_function_of_the_rows():
    row = ShadowReturn(merchant="m", loop_return_id="1", rma_number=None, decided_at=DAY1,
                       would="remove_and_process", rules=["missing"], reasons=["missing 1 x A"],
                       summary="", note=None, person_action="closed", person_acted_at=DAY1)
    cancelled = ShadowReturn(**{**row.__dict__, "loop_return_id": "2", "person_action": "cancelled"})
    [report] = agreement_report([row, cancelled])
    assert (report.agreed, report.disagreed) == (1, 1)  # Loop cannot tell a removal from a process
    assert report.disagreements[0].person == "cancelled"
    assert agreement_report([]) == []


@pytest.fixture
def cli_env(database_url) -> dict:
    return {"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:9/0", "MERCHANTS_FILE": None,
            "MERCHANTS_TOML": None, "APP_ENV": None}


def test_cli_shadow_report_prints_the_numbers_and_the_disagreements(cli, decided, cli_env):
    text = cli("shadow", "report", env=cli_env)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == "acme: decided 1, agreed 1, disagreed 0, waiting for a person 0 (agreement 100%)"
    assert lines[1] == "demo: decided 4, agreed 1, disagreed 2, waiting for a person 1 (agreement 33%)"
    assert lines[2] == "  return 102 (RA 3102): we would flag (rules: condition); the person processed or closed"
    assert lines[3] == "    received damaged 1 x CB11D10-BLUE-M"
    assert lines[4] == "  return 103 (RA 3103): we would process (rules: none); the person flagged"
    narrowed = cli("shadow", "report", "--merchant", "demo", "--since", "2026-11-15", "--json", env=cli_env)
    [demo] = json.loads(narrowed.output)
    assert (demo["merchant"], demo["decided"], demo["disagreed"], demo["waiting"]) == ("demo", 2, 1, 1)
    assert demo["disagreements"][0]["loop_return_id"] == "103"
    none = cli("shadow", "report", "--merchant", "acme", "--since", "2030-01-01", env=cli_env)
    assert none.output == "no returns decided in shadow mode for acme since 2030-01-01\n"


@pytest.fixture
def ops(sessions, merchants):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ENQUEUE_STEP": lambda *a: None,
                      "ADMIN_TOKEN": TOKEN, "OPERATOR_TOKENS": {"alice": ALICE}})
    return app.test_client()


def test_the_ops_page_needs_an_operator_login_and_shows_the_report(ops, decided):
    assert ops.get("/ops/shadow").status_code == 401
    assert ops.get("/ops/shadow", headers=basic("wrong")).status_code == 401
    page = ops.get("/ops/shadow?merchant=demo", headers=basic(ALICE))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<td>demo</td><td>4</td><td>1</td><td>2</td>" in html and "<td>acme</td>" not in html
    assert "demo: disagreements (2)" in html and "received damaged 1 x CB11D10-BLUE-M" in html
    assert 'href="/ops/returns/demo/102"' in html and "processed or closed" in html
    later = ops.get("/ops/shadow?since=2026-11-15", headers=basic()).get_data(as_text=True)
    assert "<td>demo</td><td>2</td>" in later and "<td>acme</td><td>1</td>" in later
    assert ops.get("/ops/shadow?since=yesterday", headers=basic()).status_code == 400


@pytest.fixture
def stored(cli, tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MERCHANT_KEYS": Fernet.generate_key().decode(),
           "MERCHANTS_FILE": None, "MERCHANTS_TOML": None, "APP_ENV": None}
    assert cli("init-db", env=env).exit_code == 0
    (tmp_path / "m.toml").write_text(toml("acme"))
    assert cli("merchants", "import", str(tmp_path / "m.toml"), env=env).exit_code == 0
    return env


def test_merchants_update_switches_the_mode_and_refuses_an_unknown_one(cli, stored):
    from click.testing import CliRunner

    from cli.main import main

    def run(*args):
        return CliRunner().invoke(main, list(args), env=stored)

    assert "mode   shadow" not in run("merchants").output  # live by default
    assert run("merchants", "update", "acme", "--set", "mode=shadow").output == "acme: updated\n"
    listed = run("merchants").output
    assert "  mode   shadow: decisions recorded, nothing sent to Loop" in listed
    assert json.loads(run("merchants", "show", "acme").output)["config"]["mode"] == "shadow"
    bad = run("merchants", "update", "acme", "--set", "mode=dry-run")
    assert bad.exit_code == 1 and "mode" in bad.output
    assert run("merchants", "update", "acme", "--set", "mode=live").output == "acme: updated\n"
