"""The CLI's operator name on manual actions (--operator, OPERATOR_NAME, the OS user), and
`rlm-loop events list`; on SQLite and PostgreSQL, with steps recorded instead of published."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from integration.store.db import session_factory
from integration.store.models import Return, WebhookEvent
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def queued(monkeypatch) -> list:
    """The commands' Context, enqueueing into a list (no broker)."""
    steps: list = []

    def context(settings, merchants, publish=True):
        return Context(settings=settings, merchants=merchants, enqueue=lambda *a: steps.append(a),
                       sessions=session_factory(settings.database_url))
    monkeypatch.setattr("cli.main.context", context)
    monkeypatch.setattr("cli.events.context", context)
    return steps


@pytest.fixture
def env(sessions, database_url) -> dict:
    return {"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:9/0", "MERCHANTS_FILE": None,
            "APP_ENV": None, "OPERATOR_NAME": None}


def parked(sessions, loop_id: str, state: str = lc.NEEDS_ATTENTION, **fields) -> int:
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id=loop_id, state=lc.RECEIVED, units=[], rma_lines=[],
                     **fields)
        s.add(ret)
        s.flush()
        ret.state = state
        s.commit()
        return ret.id


def last_entry(sessions, rid: int) -> tuple[str, str | None]:
    with sessions() as s:
        t = s.get(Return, rid).timeline[-1]
        return t.cause, t.detail


def test_retry_and_redecide_record_the_operator(cli, env, sessions, queued, monkeypatch):
    rid = parked(sessions, "31", attention_step="create_rma", attention_reason="SKU unknown to RLM")
    done = cli("retry", "31", "--operator", "alice", env=env)
    assert (done.exit_code, done.output) == (0, "return 31: retrying create_rma\n")
    assert queued == [("create_rma", rid)]
    assert last_entry(sessions, rid) == ("retry requested by an operator", "by alice; SKU unknown to RLM")

    decided = parked(sessions, "32", lc.DECIDED, decision="flag")
    assert cli("redecide", "32", env={**env, "OPERATOR_NAME": "bob"}).exit_code == 0
    assert last_entry(sessions, decided) == ("re-decide requested by an operator", "by bob")

    monkeypatch.setattr("getpass.getuser", lambda: "Carol")  # neither given: the OS user, lower-cased
    again = parked(sessions, "33", attention_step="transmit_rma")
    assert cli("retry", "33", env=env).exit_code == 0
    assert last_entry(sessions, again) == ("retry requested by an operator", "by carol")


def test_an_unusable_operator_name_stops_the_command_before_it_acts(cli, env, sessions, queued, monkeypatch):
    rid = parked(sessions, "34", attention_step="create_rma")
    bad = cli("retry", "34", "--operator", "Alice Smith", env=env)
    assert bad.exit_code == 1 and "operator name 'Alice Smith' is not 1 to 40 of a-z 0-9 . _ -" in bad.output

    def nobody():
        raise OSError("no user")
    monkeypatch.setattr("getpass.getuser", nobody)
    unknown = cli("replay", "1", env=env)
    assert unknown.exit_code == 1 and "pass --operator NAME or set OPERATOR_NAME" in unknown.output
    assert queued == []
    with sessions() as s:
        assert (s.get(Return, rid).state, s.get(Return, rid).timeline) == (lc.NEEDS_ATTENTION, [])


def test_replay_logs_the_operator(cli, env, sessions, queued, caplog):
    caplog.set_level("INFO", logger="integration.ops.actions")
    with sessions() as s:
        ev = WebhookEvent(merchant="demo", dedupe_key="r", body_sha256="r", status="failed", topic="return",
                          trigger="return.updated", loop_return_id="35", payload={"topic": "return"})
        s.add(ev)
        s.commit()
    done = cli("replay", str(ev.id), "--operator", "dave", env=env)
    assert done.exit_code == 0 and "replaying" in done.output
    assert queued == [("handle_event", ev.id)]
    assert [r.getMessage() for r in caplog.records if getattr(r, "operator", None)] == ["replay by dave: done"]


def test_events_list_pages_through_failed_and_invalid_deliveries(cli, env, sessions, queued):
    with sessions() as s:
        for i in range(3):
            s.add(WebhookEvent(merchant="demo", dedupe_key=f"e{i}", body_sha256="x", status="failed",
                               topic="return", trigger="return.updated", loop_return_id=f"4{i}", attempts=8,
                               last_error="gave up after 8 attempts\nmore", received_at=T0 + timedelta(minutes=i),
                               payload={"topic": "return", "ship_from": {"name": "Pat Shopper"}}))
        s.add(WebhookEvent(merchant="demo", dedupe_key="ok", body_sha256="x", status="done", received_at=T0))
        s.commit()
    first = cli("events", "list", "--limit", "2", env=env)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert len(lines) == 3 and "return 42" in lines[0] and "return 41" in lines[1]
    assert "failed" in lines[0] and "return.updated" in lines[0] and "attempts 8" in lines[0]
    assert lines[0].endswith("gave up after 8 attempts") and "Pat" not in first.output
    cursor = lines[2].removeprefix("more: --after ")
    rest = json.loads(cli("events", "list", "--limit", "2", "--after", cursor, "--json", env=env).output)
    assert [e["loop_return_id"] for e in rest["events"]] == ["40"] and rest["next_cursor"] is None
    assert rest["events"][0]["received_at"] == T0.isoformat() and "payload" not in rest["events"][0]
    done = cli("events", "list", "--status", "done", "--since", "2026-11-27", env=env)
    assert done.exit_code == 0 and len(done.output.splitlines()) == 1
    assert cli("events", "list", "--merchant", "acme", env=env).output == "no deliveries match\n"
    bad = cli("events", "list", "--after", "garbage", env=env)
    assert bad.exit_code == 1 and "not a cursor" in bad.output
    assert cli("events", "list", "--status", "lost", env=env).exit_code == 2  # click's usage error
