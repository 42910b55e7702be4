"""JSON logs that name the return on every line of its work, and the /metrics endpoint."""
from __future__ import annotations

import io
import json
import logging

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from integration.infra import logs
from tests.stack.helpers import wait_for
from workers.names import STEP_TASK_NAMES
from workers.observability import _readable_args


def test_json_lines_carry_the_bound_fields_and_extras():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    try:
        with logs.bound(merchant="acme", loop_return_id="123", task="rlm.create_rma"):
            logger.warning("parked %s", "x", extra={"step": "create_rma"})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["message"] == "parked x" and inside["level"] == "WARNING"
    assert (inside["merchant"], inside["loop_return_id"], inside["step"]) == ("acme", "123", "create_rma")
    assert "merchant" not in outside


def test_published_tasks_show_what_their_id_is():
    headers = {"argsrepr": "[42]"}
    _readable_args(sender=STEP_TASK_NAMES["decide"], headers=headers, body=((42,), {}, {}))
    assert headers["argsrepr"] == "return_id=42"
    _readable_args(sender=STEP_TASK_NAMES["handle_event"], headers=headers, body=((7,), {}, {}))
    assert headers["argsrepr"] == "event_id=7"


@pytest.mark.stack
def test_every_worker_line_about_a_return_names_its_merchant_and_loop_id(stack, flagged_return):
    loop_id = flagged_return["loop_return_id"]
    lines = []
    for name in ("worker1", "loopworker1"):
        text = (stack.workdir / "logs" / f"{name}.log").read_text(errors="replace")
        lines += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return_tasks = set(STEP_TASK_NAMES.values())
    about_returns = [line for line in lines if line.get("task") in return_tasks]
    assert about_returns
    assert all(line.get("merchant") and line.get("loop_return_id") for line in about_returns)
    ours = {line["task"] for line in about_returns if line["loop_return_id"] == loop_id}
    assert {"loop.handle_event", "rlm.create_rma", "rlm.transmit_rma", "integration.decide",
            "loop.act_in_loop", "rlm.close_rma"} <= ours


@pytest.mark.stack
def test_no_shopper_data_in_any_service_log(stack, flagged_return):
    for name in ("web", "worker1", "loopworker1", "beat"):
        text = (stack.workdir / "logs" / f"{name}.log").read_text(errors="replace")
        assert "@example.com" not in text and "Demo Street" not in text, name


def scrape(stack) -> dict:
    r = requests.get(f"{stack.url('web')}/metrics", headers=stack.admin_headers(), timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


@pytest.mark.stack
def test_metrics_report_states_tasks_queues_and_the_inbox(stack, flagged_return):
    assert requests.get(f"{stack.url('web')}/metrics", timeout=10).status_code == 401
    m = scrape(stack)
    assert m[("rlm_loop_returns", (("merchant", "demo"), ("state", "complete")))] >= 1
    assert m[("rlm_loop_task_duration_seconds_count",
              (("state", "SUCCESS"), ("task", "rlm.create_rma")))] >= 1
    assert ("rlm_loop_inbox_lag_seconds", ()) in m
    assert {q for (name, labels) in m if name == "rlm_loop_queue_messages"
            for _, q in labels} == {"periodic", "default", "loop", "erp"}
    assert ("rlm_loop_ratelimit_wait_seconds_total", (("system", "loop"),)) in m


@pytest.mark.stack
def test_api_errors_are_counted_by_system_and_code(stack):
    key = ("rlm_loop_api_errors_total", (("code", "503"), ("system", "rlm")))
    before = scrape(stack).get(key, 0)
    faults = f"{stack.url('rlm')}/_sim/faults"
    requests.post(faults, json={"match": {"method": "GET", "path": "/receipts"}, "status": 503,
                                "times": 1}, timeout=5).raise_for_status()
    try:  # the beat's receipt poll (every second here) meets the fault
        wait_for(lambda: scrape(stack).get(key, 0) > before, 30, what="the 503 to be counted")
    finally:
        requests.delete(faults, timeout=5)
