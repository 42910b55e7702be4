"""A merchant's whole life on a running stack, with no restart: added from TOML through the CLI,
checked, its webhooks subscribed, run in shadow (decided, nothing sent, compared with what a
person does in Loop), switched live (the next return processed in Loop), disabled (its
webhooks refused, its new returns never taken up).

The merchant has a Loop account of its own: a second Loop sandbox (its own key, webhook secret
and returns), as each brand is its own shop in Loop. RLM is the stack's sandbox. Both databases.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from integration.infra.embedded_redis import free_port
from integration.loop.signature import sign
from stack.demo import Demo, demo_env
from stack.processes import ROOT, Stack, wait_http
from tests.system import postgres_bindir

from .helpers import our_view, receive, wait_for, wait_for_state

pytestmark = pytest.mark.stack

ACME_KEY = "acme-loop-key-0001"
ACME_HOOK = "acme-webhook-secret-0001"


class Shop:
    """The merchant's own Loop account: a Loop sandbox process of its own."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LOOP_API_KEY": ACME_KEY, "LOOP_WEBHOOK_SECRET": ACME_HOOK}
        self.log = open(workdir / "acme-loop.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "sandbox.loop", "--port", str(self.port)],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/_sim/clock", self.proc)
        # Loop processes a return a moment after the call, as the stack's own sandbox is set to.
        self.config(process_delay_s=1.0, webhook_retry_base_s=0.5)

    def config(self, **settings) -> None:
        requests.post(f"{self.url}/_sim/config", json=settings, timeout=5).raise_for_status()

    def create_return(self, demo: Demo, n: int) -> str:
        a, b = demo.items[n % len(demo.items)], demo.items[(n + 7) % len(demo.items)]
        body = {"order_name": f"#{5000 + n}", "customer": f"shopper{n}@example.com",
                "line_items": [{**u, "price": "40.00", "return_reason": "Too small"} for u in (a, a, b)]}
        r = requests.post(f"{self.url}/_sim/returns", json=body, timeout=10)
        r.raise_for_status()
        return str(r.json()["id"])

    def actions(self, loop_id: str) -> list[str]:
        record = requests.get(f"{self.url}/_sim/returns/{loop_id}", timeout=10).json()
        return [a["action"] for a in record.get("actions", []) if a.get("ok")]

    def set_state(self, loop_id: str, state: str) -> None:
        requests.post(f"{self.url}/_sim/returns/{loop_id}/state", json={"state": state},
                      timeout=10).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(params=["sqlite", "postgres"])
def running(request, tmp_path) -> Iterator[tuple[Stack, Shop]]:
    if request.param == "postgres":
        postgres_bindir()  # or skipped (failed under CI=true) without PostgreSQL
    env = {**demo_env(4), "MERCHANT_KEYS": Fernet.generate_key().decode(), "MERCHANTS_REFRESH_S": "1"}
    shop = Shop(tmp_path)
    try:
        with Stack(tmp_path / "stack", extra_env=env, database=request.param) as stack:
            yield stack, shop
    finally:
        shop.stop()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], env={**stack.env, "OPERATOR_NAME": "alice"},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def acme_toml(stack: Stack, shop: Shop, mode: str) -> str:
    return f'''[[merchants]]
name = "acme"
loop_base_url = "{shop.url}"
loop_api_key = "{ACME_KEY}"
webhook_secrets = ["{ACME_HOOK}"]
rlm_base_url = "{stack.url('rlm')}"
rlm_company = 90
rlm_username = "{stack.env.get('RLM_USERNAME', 'demo')}"
rlm_key = "{stack.env.get('RLM_KEY', 'demo-rlm-key')}"
division_number = 10
warehouse_number = 1
mode = "{mode}"
'''


def webhook_status(stack: Stack) -> int:
    """What the receiver answers a correctly signed delivery for acme (404: not a merchant of ours)."""
    body = json.dumps({"topic": "return", "trigger": "return.updated", "return": {"id": "1"}}).encode()
    r = requests.post(f"{stack.url('web')}/webhooks/loop/acme", data=body, timeout=10,
                      headers={"Content-Type": "application/json", "X-Loop-Signature": sign(ACME_HOOK, body)})
    return r.status_code


def take_to_decision(stack: Stack, demo: Demo, shop: Shop, n: int) -> str:
    loop_id = shop.create_return(demo, n)
    view = wait_for_state(stack, loop_id, "transmitted", timeout=90)
    receive(stack, view["rma_number"], "exact")
    return loop_id


def test_a_merchant_is_added_checked_shadowed_switched_live_and_disabled_without_a_restart(running, tmp_path):
    stack, shop = running
    started = {name: proc.pid for name, proc in stack.procs.items()}
    demo = Demo(stack)
    assert webhook_status(stack) == 404  # not a merchant yet

    # Added from TOML, in shadow: every process takes it up within MERCHANTS_REFRESH_S.
    toml = tmp_path / "acme.toml"
    toml.write_text(acme_toml(stack, shop, "shadow"))
    added = cli(stack, "merchants", "add", "--from-toml", str(toml))
    assert added.returncode == 0, added.stdout + added.stderr
    wait_for(lambda: webhook_status(stack) != 404, timeout=30, what="the receiver to know acme")

    checked = cli(stack, "merchants", "check", "acme")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not [line for line in checked.stdout.splitlines() if line.startswith("failed")], checked.stdout
    subscribed = cli(stack, "merchants", "subscribe", "acme", "--url", stack.url("web"))
    assert subscribed.returncode == 0, subscribed.stdout + subscribed.stderr
    for text in (added, checked, subscribed):
        assert ACME_KEY not in text.stdout + text.stderr and ACME_HOOK not in text.stdout + text.stderr

    # Shadow: the whole workflow runs from acme's own webhooks, nothing is sent to its Loop.
    shadowed = take_to_decision(stack, demo, shop, 1)
    view = wait_for_state(stack, shadowed, "shadow_decided", timeout=90)
    assert view["decision"]["action"] == "process"
    assert shop.actions(shadowed) == []
    shop.set_state(shadowed, "closed")  # the merchant's team processes it by hand, as we would have
    wait_for_state(stack, shadowed, "complete", timeout=60)
    report = cli(stack, "shadow", "report", "--merchant", "acme", "--json")
    assert report.returncode == 0, report.stderr
    [acme] = json.loads(report.stdout)
    assert (acme["decided"], acme["agreed"], acme["disagreed"]) == (1, 1, 0)

    # Live, on the evidence: the next return is processed in Loop, once; the shadow one never.
    switched = cli(stack, "merchants", "update", "acme", "--set", "mode=live")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    live = take_to_decision(stack, demo, shop, 2)
    wait_for_state(stack, live, "complete", timeout=120)
    assert shop.actions(live) == ["process"]
    assert shop.actions(shadowed) == []

    # Disabled: its webhooks are refused and its new returns are never taken up.
    disabled = cli(stack, "merchants", "disable", "acme")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    wait_for(lambda: webhook_status(stack) == 404, timeout=30, what="the receiver to refuse acme")
    ignored = shop.create_return(demo, 3)
    with pytest.raises(AssertionError):
        wait_for(lambda: our_view(stack, ignored), timeout=8, what="a disabled merchant's return")

    # All of it on the processes started at the beginning: nothing was restarted.
    assert {name: proc.pid for name, proc in stack.procs.items()} == started
