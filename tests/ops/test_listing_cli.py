"""`rlm-loop returns list`, `attention` and `retry-group`: output and exit codes, on SQLite and
PostgreSQL (tests/ops/test_queries.py and test_bulk_retry.py cover what they compute)."""
from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from cli import listing
from integration.ops.queries import reason_key
from integration.store.models import Return
from integration.workflow import lifecycle as lc

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SKU = "SKU unknown to RLM: {} (barcode none); no RMA created. Fix the catalog or SKU mapping, then retry."


@pytest.fixture
def env(database_url, sessions) -> dict:
    """The database (made by `sessions`), and a broker nothing listens on: only `retry-group`
    without --dry-run publishes, and its test records the steps instead."""
    return {"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:9/0", "MERCHANTS_FILE": None,
            "APP_ENV": None}


def add(sessions, loop_id: str, state: str, hours: int = 0, **fields) -> int:
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id=loop_id, state=state, units=[], rma_lines=[],
                     updated_at=T0 + timedelta(hours=hours), **fields)
        s.add(ret)
        s.commit()
        return ret.id


def test_returns_list_prints_a_line_per_return_and_the_next_cursor(cli, env, sessions):
    for n in range(7):
        add(sessions, str(900 + n), lc.NEEDS_ATTENTION if n % 2 else lc.COMPLETE, hours=n,
            rma_number=3000 + n, attention_step="create_rma" if n % 2 else None,
            attention_reason=SKU.format(n) if n % 2 else None)
    seen, args = [], ["returns", "list", "--limit", "3"]
    while True:
        result = cli(*args, env=env)
        assert result.exit_code == 0, result.output
        *lines, last = result.output.splitlines()
        seen += [line.split()[3] for line in lines]
        if last == "last page":
            break
        assert last.startswith("next page: --after ")
        args = ["returns", "list", "--limit", "3", "--after", last.split()[-1]]
    assert seen == [str(906 - n) for n in range(7)]
    first = cli("returns", "list", "--state", "needs_attention", "--since", "2026-11-01", env=env).output
    assert first.splitlines()[0] == ("2026-11-01 17:00:00  demo         905            needs_attention    "
                                     "RMA 3005      create_rma: " + SKU.format(5)[:80])
    assert first.splitlines()[-1] == "last page" and len(first.splitlines()) == 4

    page = json.loads(cli("returns", "list", "--reason", "sku", "--limit", "2", "--json", env=env).output)
    assert [r["loop_return_id"] for r in page["returns"]] == ["905", "903"]
    assert page["returns"][0]["updated_at"] == "2026-11-01 17:00:00" and page["next_cursor"]
    assert cli("returns", "list", "--merchant", "nobody", env=env).output == "no returns match\nlast page\n"


def test_a_bad_cursor_or_limit_is_a_usage_error(cli, env):
    bad = cli("returns", "list", "--after", "not-a-cursor", env=env)
    assert bad.exit_code == 2
    assert "Invalid value for '--after': not a cursor this list gave out" in bad.output
    assert cli("returns", "list", "--limit", "0", env=env).exit_code == 2


def test_attention_prints_each_group_with_its_key(cli, env, sessions):
    assert cli("attention", env=env).output == "no returns need attention\n"
    for n in range(3):
        add(sessions, f"91{n}", lc.NEEDS_ATTENTION, hours=n, attention_step="create_rma",
            attention_reason=SKU.format(f"X-{n}"))
    add(sessions, "920", lc.NEEDS_ATTENTION, attention_step="transmit_rma",
        attention_reason="RLM refused to transmit RA 12: closed")
    result = cli("attention", "--merchant", "demo", env=env)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[:4] == ["    3  demo  step create_rma  since 2026-11-01 12:00:00",
                         f"       key      {reason_key(SKU)}",
                         f"       example  {SKU.format('X-0')}",
                         f"       preview  rlm-loop retry-group --merchant demo --step create_rma "
                         f"--reason-key '{reason_key(SKU)}' --dry-run"]
    assert lines[4] == "    1  demo  step transmit_rma  since 2026-11-01 12:00:00"


def test_retry_group_dry_run_changes_nothing_and_the_real_run_retries(cli, env, sessions, monkeypatch):
    ids = [add(sessions, f"93{n}", lc.NEEDS_ATTENTION, hours=n, attention_step="create_rma",
               attention_reason=SKU.format(n)) for n in range(2)]
    group = ["--merchant", "demo", "--step", "create_rma", "--reason-key", reason_key(SKU)]
    dry = cli("retry-group", *group, "--dry-run", env=env)
    assert (dry.exit_code, dry.output) == (0, (
        "would retry  930            resumes create_rma (back to received)\n"
        "would retry  931            resumes create_rma (back to received)\n"
        "2 would be retried (dry run: nothing changed)\n"))
    with sessions() as s:
        assert {s.get(Return, i).state for i in ids} == {lc.NEEDS_ATTENTION}

    queued, original = [], listing.context

    def recording_context(settings, merchants, publish=True):
        ctx = original(settings, merchants, publish=False)
        return dataclasses.replace(ctx, enqueue=lambda step, i: queued.append((step, i)))

    monkeypatch.setattr(listing, "context", recording_context)
    done = cli("retry-group", *group, "--limit", "1", env=env)
    assert (done.exit_code, done.output) == (0, (
        "retried      930            resumes create_rma (back to received)\n"
        "1 retried, 0 skipped; 1 more in the group beyond --limit 1\n"))
    assert queued == [("create_rma", ids[0])]


def test_retry_group_fails_on_an_empty_group_or_an_unknown_merchant(cli, env, sessions):
    empty = cli("retry-group", "--merchant", "demo", "--step", "create_rma", "--reason-key", "nope",
                "--dry-run", env=env)
    assert empty.exit_code == 1
    assert "no returns of demo parked at create_rma with reason key 'nope'" in empty.output
    unknown = cli("retry-group", "--merchant", "acme", "--step", "x", "--reason-key", "y", env=env)
    assert (unknown.exit_code, unknown.output) == (1, "Error: no merchant acme\n")


def test_the_commands_are_listed(cli):
    commands = cli("--help").output
    for command in ("returns", "attention", "retry-group"):
        assert f"  {command} " in commands
    assert "  list " in cli("returns", "--help").output
