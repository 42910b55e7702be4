"""Small helpers for tests that drive the real stack over HTTP."""
from __future__ import annotations

import time

import requests
from celery import Celery

from integration.workflow.mapping import rma_ref
from stack.demo import Demo, Scenario
from workers.names import publisher


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def our_view(stack, loop_id: str) -> dict:
    r = requests.get(f"{stack.url('web')}/api/returns/{loop_id}", headers=stack.admin_headers(), timeout=10)
    return r.json() if r.status_code == 200 else {}


def wait_for_state(stack, loop_id: str, states: set[str] | str, timeout: float = 60.0) -> dict:
    wanted = {states} if isinstance(states, str) else states
    return wait_for(lambda: (v := our_view(stack, loop_id)) and v.get("state") in wanted and v,
                    timeout, what=f"return {loop_id} to reach {sorted(wanted)}")


def loop_record(stack, loop_id: str) -> dict:
    return requests.get(f"{stack.url('loop')}/_sim/returns/{loop_id}", timeout=10).json()


def ras_for(stack, loop_id: str) -> int:
    stats = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=10).json()
    return stats["ras_per_external_ref"].get("90", {}).get(rma_ref("demo", loop_id), 0)


def successful_actions(stack, loop_id: str) -> list[str]:
    return [a["action"] for a in loop_record(stack, loop_id).get("actions", []) if a.get("ok")]


def new_return(stack, n: int, **scenario) -> str:
    demo = Demo(stack)
    return demo.create_return(n, Scenario("test", "n/a", **scenario)).loop_id


def receive(stack, ra_number: int, scenario: str) -> None:
    url = f"{stack.url('rlm')}/_sim/companies/90/return-authorizations/{ra_number}/receive"
    requests.post(url, json={"scenario": scenario}, timeout=10).raise_for_status()


def celery_for(stack) -> Celery:
    """A bare publisher on the stack's broker, to trigger tasks by name as an operator would."""
    return publisher(stack.redis_url)
