"""CLI commands against the real stack: what happened to a return, retry, replay, backfill,
and doctor on good and bad configuration."""
from __future__ import annotations

import json
import sqlite3

import pytest
import redis
import requests

from tests.stack.helpers import (
    new_return,
    our_view,
    successful_actions,
    wait_for,
    wait_for_state,
)

pytestmark = pytest.mark.stack


def db(stack) -> sqlite3.Connection:
    return sqlite3.connect(stack.env["DATABASE_URL"].split("///", 1)[1])


def test_status_tells_what_happened_and_why(stack, flagged_return, cli):
    loop_id = flagged_return["loop_return_id"]
    result = cli("status", loop_id, env=stack.env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["state", "complete", "(Loop:", "review)"]
    assert f"RMA          {flagged_return['rma_number']}" in result.output
    assert "decision     flag" in result.output and "rules fired  condition" in result.output
    assert f"Loop note    {flagged_return['decision']['loop_note']}" in result.output
    assert "transmitted -> fully_received" in result.output  # the timeline
    as_json = json.loads(cli("status", loop_id, "--json", env=stack.env).output)
    assert as_json == our_view(stack, loop_id)


def test_status_of_an_unknown_return_fails(stack, cli):
    result = cli("status", "999999999", env=stack.env)
    assert result.exit_code == 1 and "no return 999999999" in result.output


def test_retry_resumes_a_parked_return(stack, cli):
    faults = f"{stack.url('rlm')}/_sim/faults"
    requests.post(faults, json={"match": {"method": "POST", "path": "/return-authorizations"},
                                "code0": "Invalid Warehouse", "times": 1}, timeout=5).raise_for_status()
    try:
        loop_id = new_return(stack, 202)
        wait_for_state(stack, loop_id, "needs_attention")
    finally:
        requests.delete(faults, timeout=5)
    assert "Invalid Warehouse" in cli("status", loop_id, env=stack.env).output
    result = cli("retry", loop_id, env=stack.env)
    assert result.output.strip() == f"return {loop_id}: retrying create_rma"
    wait_for_state(stack, loop_id, "transmitted")
    assert "nothing to retry" in cli("retry", loop_id, env=stack.env).output


def test_replay_of_a_handled_webhook_changes_nothing(stack, flagged_return, cli):
    loop_id = flagged_return["loop_return_id"]
    actions = successful_actions(stack, loop_id)
    event_id = db(stack).execute("select min(id) from webhook_events where loop_return_id = ?",
                                 (loop_id,)).fetchone()[0]
    assert "replaying" in cli("replay", str(event_id), env=stack.env).output
    wait_for(lambda: db(stack).execute("select status from webhook_events where id = ?",
                                       (event_id,)).fetchone()[0] == "done", 30, what="the replay")
    assert our_view(stack, loop_id)["state"] == "complete"
    assert successful_actions(stack, loop_id) == actions == ["flag", "note"]


def test_backfill_creates_what_is_missing_and_publishes_its_first_step(stack, cli, tmp_path):
    """Against an empty database (and a broker database no worker reads), every return the Loop
    sandbox has is missing: backfill creates them and queues their RMAs on the erp queue."""
    loop_id = new_return(stack, 203)
    broker = stack.redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(broker).flushdb()
    env = {**stack.env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "REDIS_URL": broker}
    assert cli("init-db", env=env).exit_code == 0
    today = stack_day(stack)
    first = cli("backfill", "--since", today, env=env)
    assert first.exit_code == 0, first.output
    created = int(first.output.split("demo: ")[-1].split()[0])
    assert created >= 1
    local = sqlite3.connect(tmp_path / "empty.db")
    causes = local.execute("select t.cause from timeline t join returns r on r.id = t.return_id "
                           "where r.loop_return_id = ?", (loop_id,)).fetchall()
    assert ("created by a backfill",) in causes
    assert redis.Redis.from_url(broker).llen("erp") == created  # rlm.create_rma, by name
    assert "demo: 0 returns created" in cli("backfill", "--since", today, env=env).output


def stack_day(stack) -> str:
    return requests.get(f"{stack.url('loop')}/_sim/clock", timeout=5).json()["now"][:10]


def test_doctor_passes_on_the_running_stack(stack, cli):
    result = cli("doctor", env=stack.env)
    assert result.exit_code == 0, result.output
    for line in ("ok    database", "ok    redis", "ok    queue default", "ok    queue loop",
                 "ok    queue erp", "ok    beat", "ok    demo: Loop", "ok    demo: RLM"):
        assert line in result.output, result.output
    assert "all checks passed" in result.output


def test_doctor_names_each_problem_of_a_bad_configuration(stack, cli, tmp_path):
    env = {**stack.env, "APP_ENV": "production", "ADMIN_TOKEN": None, "LOOP_API_KEY": "wrong-key",
           "REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "RLM_WAREHOUSE": "2", "RLM_DIVISION": "99", "FLOWER_BASIC_AUTH": None}
    result = cli("doctor", env=env)
    assert result.exit_code == 1
    out = result.output
    assert "FAIL  ADMIN_TOKEN" in out and "refuses to start" in out
    assert "FAIL  DATABASE_URL" in out and "PostgreSQL" in out
    assert "FAIL  schema" in out
    assert "FAIL  redis" in out and "redis://127.0.0.1:1/0" in out
    assert "FAIL  demo: Loop" in out and "credentials refused (401" in out
    assert "FAIL  demo: warehouse" in out and "does not accept returns" in out
    assert "FAIL  demo: division" in out and "RLM_DIVISION 99 does not exist" in out
    assert "FAIL  demo: config" in out and "is not https" in out
    assert "wrong-key" not in out and stack.env["LOOP_WEBHOOK_SECRET"] not in out
