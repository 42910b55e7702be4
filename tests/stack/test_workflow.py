"""The workflow on the real stack: gunicorn receiver, Valkey, a Celery worker and beat, and
both sandboxes over real HTTP. Each test plays one path a real return takes."""
from __future__ import annotations

import json

import pytest
import requests

from integration.loop.signature import sign
from integration.workflow.mapping import rma_ref
from stack.demo import SCENARIOS, SIM_ONLY_FIELDS, Demo, Scenario, Tracked

from .helpers import (
    celery_for,
    loop_record,
    new_return,
    our_view,
    ras_for,
    receive,
    successful_actions,
    wait_for,
    wait_for_state,
)

pytestmark = pytest.mark.stack


def loop_config(stack, **settings):
    requests.post(f"{stack.url('loop')}/_sim/config", json=settings, timeout=5).raise_for_status()


def test_demo_scenarios_end_to_end(stack):
    rows = Demo(stack).run(len(SCENARIOS), timeout=150)
    mismatched = [r for r in rows if not r["matched"]]
    assert not mismatched, json.dumps(mismatched, indent=1)
    assert {r["scenario"] for r in rows} == {s.name for s in SCENARIOS}
    by_scenario = {r["scenario"]: r for r in rows}
    assert "NOSUCH-STYLE" in by_scenario["unknown_sku"]["reasons"][0]
    assert by_scenario["missing_after_grace"]["loop_note"].startswith(
        f"RLM RA {by_scenario['missing_after_grace']['rma_number']}: missing 1 x ")
    assert by_scenario["loop_processing_failed"]["loop_state"] == "open"
    assert by_scenario["cancelled_before_receipt"]["loop_state"] == "cancelled"


def test_every_webhook_three_times_still_one_rma_and_one_loop_action(stack):
    loop_config(stack, duplicate_deliveries=3)
    try:
        loop_id = new_return(stack, 101)
        view = wait_for_state(stack, loop_id, "transmitted")
        receive(stack, view["rma_number"], "exact")
        wait_for_state(stack, loop_id, "complete")
    finally:
        loop_config(stack, duplicate_deliveries=1)
    assert ras_for(stack, loop_id) == 1
    assert successful_actions(stack, loop_id) == ["process"]


def test_update_arriving_before_create_ends_the_same_way(stack):
    """Out of order and twice: `return.updated` reaches us before `return.created`, which comes twice."""
    demo = Demo(stack)
    with demo.created_webhook_off():
        loop_id = new_return(stack, 102)
    demo.send_shuffled(Tracked(Scenario("shuffled", "processed"), loop_id))
    view = wait_for_state(stack, loop_id, "transmitted")
    receive(stack, view["rma_number"], "exact")
    wait_for_state(stack, loop_id, "complete")
    assert ras_for(stack, loop_id) == 1 and successful_actions(stack, loop_id) == ["process"]


def test_rlm_outage_is_retried_with_backoff_and_loses_nothing(stack):
    faults = f"{stack.url('rlm')}/_sim/faults"
    requests.post(faults, json={"match": {"method": "POST", "path": "/return-authorizations"},
                                "status": 503, "html": True, "times": 3}, timeout=5).raise_for_status()
    try:
        loop_id = new_return(stack, 103)
        view = wait_for_state(stack, loop_id, "transmitted", timeout=90)
    finally:
        requests.delete(faults, timeout=5)
    assert ras_for(stack, loop_id) == 1
    assert view["rma_number"]


def test_rlm_rejection_parks_the_return_with_rlms_message_and_retry_resumes(stack):
    faults = f"{stack.url('rlm')}/_sim/faults"
    requests.post(faults, json={"match": {"method": "POST", "path": "/return-authorizations"},
                                "code0": "Invalid Warehouse", "times": 1}, timeout=5).raise_for_status()
    try:
        loop_id = new_return(stack, 104)
        view = wait_for_state(stack, loop_id, "needs_attention")
    finally:
        requests.delete(faults, timeout=5)
    assert "Invalid Warehouse" in view["attention_reason"]
    assert ras_for(stack, loop_id) == 0

    from integration.merchants import load_merchants
    from integration.ops.actions import retry_return
    from integration.settings import load_settings
    from integration.store.db import session_factory
    from integration.workflow.context import Context

    publisher = celery_for(stack)
    from workers.names import STEP_TASK_NAMES

    ctx = Context(settings=load_settings(), merchants=load_merchants(),
                  sessions=session_factory(stack.env["DATABASE_URL"]),
                  enqueue=lambda step, i: publisher.send_task(STEP_TASK_NAMES[step], args=[i]))
    assert retry_return(ctx, "demo", loop_id, operator="test").step == "create_rma"
    wait_for_state(stack, loop_id, "transmitted")
    assert ras_for(stack, loop_id) == 1
    causes = [t["cause"] for t in our_view(stack, loop_id)["timeline"]]
    assert "retry requested by an operator" in causes


def test_return_processed_by_a_person_in_loop_first_is_not_acted_on_again(stack):
    loop_id = new_return(stack, 105)
    view = wait_for_state(stack, loop_id, "transmitted")
    requests.post(f"{stack.url('loop')}/_sim/returns/{loop_id}/state", json={"state": "closed"},
                  timeout=5).raise_for_status()
    done = wait_for_state(stack, loop_id, "complete")
    assert done["decision"]["action"] == "by_person"
    assert successful_actions(stack, loop_id) == []
    ra = requests.get(f"{stack.url('rlm')}/api/v1/companies/90/return-authorizations/{view['rma_number']}",
                      auth=("demo", "demo-rlm-key"), timeout=5).json()
    assert ra["status"] == "CLOSED" and ra["close_reason"] == "MANUAL"


def test_loop_processing_failure_is_recorded_and_surfaced(stack):
    loop_id = new_return(stack, 106)
    loop_config(stack, processing_fails=[int(loop_id)])
    try:
        view = wait_for_state(stack, loop_id, "transmitted")
        receive(stack, view["rma_number"], "exact")
        parked = wait_for(lambda: (v := our_view(stack, loop_id)).get("attention_reason") and v,
                          60, what="the processing failure to be recorded")
    finally:
        loop_config(stack, processing_fails=False)
    assert "Loop could not process the return" in parked["attention_reason"]
    assert parked["state"] == "needs_attention"


def test_missed_webhooks_are_found_by_the_loop_returns_pull(stack):
    hooks_url = f"{stack.url('loop')}/api/v1/webhooks"
    auth = {"X-Authorization": "demo-loop-key"}
    hooks = requests.get(hooks_url, headers=auth, timeout=5).json()["webhooks"]

    def set_all(status):
        for h in hooks:
            requests.put(f"{hooks_url}/{h['id']}", headers=auth, timeout=5,
                         json={**{k: h[k] for k in ("topic", "trigger", "url")}, "status": status})

    set_all("inactive")
    try:
        loop_id = new_return(stack, 107)
    finally:
        set_all("active")
    assert our_view(stack, loop_id) == {}
    celery_for(stack).send_task("loop.reconcile")
    view = wait_for_state(stack, loop_id, {"rma_created", "transmitted"})
    assert any(t["cause"] == "found by the Loop returns pull" for t in view["timeline"])


def test_shopper_address_is_gone_from_the_database_once_the_rma_exists(stack):
    import sqlite3

    loop_id = new_return(stack, 108)
    wait_for_state(stack, loop_id, "transmitted")
    wait_for(lambda: _event_statuses(stack, loop_id) == {"done"}, 30, what="events handled")
    db = sqlite3.connect(stack.env["DATABASE_URL"].split("///", 1)[1])
    rows = db.execute("select payload from webhook_events where loop_return_id = ?", (loop_id,)).fetchall()
    rows += db.execute("select ship_from, units from returns where loop_return_id = ?", (loop_id,)).fetchall()
    dump = json.dumps(rows)
    assert "108 Demo Street" not in dump and "Number108" not in dump and "shopper108@" not in dump
    ra = requests.get(f"{stack.url('rlm')}/api/v1/companies/90/return-authorizations",
                      params={"external_ref": rma_ref("demo", loop_id)}, auth=("demo", "demo-rlm-key"), timeout=5).json()
    assert ra["data"][0]["ship_from"]["address1"] == "108 Demo Street"  # it did reach RLM


def _event_statuses(stack, loop_id):
    import sqlite3

    db = sqlite3.connect(stack.env["DATABASE_URL"].split("///", 1)[1])
    return {r[0] for r in db.execute("select status from webhook_events where loop_return_id = ?", (loop_id,))}


def test_a_burst_of_deliveries_all_reach_the_workers(stack):
    """Thirty returns created in Loop while we were away, delivered at once from eight
    connections: the receiver's relay sends them on several to a message, and every one is
    handled and gets its RMA."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    demo = Demo(stack)
    with demo.created_webhook_off():
        loop_ids = [new_return(stack, 300 + i) for i in range(30)]
    secret = stack.env["LOOP_WEBHOOK_SECRET"]
    url = f"{stack.url('web')}/webhooks/loop/demo"

    bodies = [json.dumps({"topic": "return", "trigger": "return.created",
                          **{k: v for k, v in loop_record(stack, loop_id).items() if k not in SIM_ONLY_FIELDS}}
                         ).encode() for loop_id in loop_ids]

    def deliver(body):
        return requests.post(url, data=body, timeout=10, headers={
            "Content-Type": "application/json", "X-Loop-Signature": sign(secret, body)}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(deliver, bodies)) == {202}
    for loop_id in loop_ids:
        wait_for_state(stack, loop_id, {"rma_created", "transmitted"}, timeout=90)
        assert ras_for(stack, loop_id) == 1
    worker_logs = "".join(p.read_text(errors="replace") for p in (stack.workdir / "logs").glob("*worker*.log"))
    assert "inbox.dispatch_events" in worker_logs  # some arrived close enough to share a message
    db = sqlite3.connect(stack.env["DATABASE_URL"].split("///", 1)[1])
    marks = ",".join("?" * len(loop_ids))
    statuses = db.execute(f"select status from webhook_events where trigger = 'return.created' "
                          f"and loop_return_id in ({marks})", loop_ids).fetchall()
    assert sorted(s for (s,) in statuses) == ["done"] * 30

