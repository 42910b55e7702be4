"""The workflow steps against both sandboxes over real HTTP, with the steps run inline.

Celery's part (delivery, retries, workers) is covered by tests/stack on the real stack;
here each path runs step by step, deterministically, so every merchant option can be tried.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
import requests

from integration.errors import RetryableError
from integration.merchants import Criteria, demo_merchant_config, parse_merchants
from integration.settings import load_settings
from integration.workflow import events, loop_action, receiving, runner, steps
from integration.workflow.context import Context
from sandbox.common import ServerThread
from sandbox.loop import create_app as loop_app
from sandbox.rlm import create_app as rlm_app


@pytest.fixture(scope="module")
def sandboxes():
    loop = loop_app({"process_delay_s": 0.05})
    servers = {"loop": ServerThread(loop).start(), "rlm": ServerThread(rlm_app({"timeout_hang_s": 1})).start()}
    yield servers
    loop.extensions["loop_sandbox"].shutdown()
    for server in servers.values():
        server.stop()


@dataclass
class Harness:
    ctx: Context
    loop_url: str
    rlm_url: str
    queue: list = field(default_factory=list)

    @property
    def merchant(self):
        return self.ctx.merchants["demo"]

    def drain(self, limit: int = 50) -> list[str]:
        """Run queued steps until none are left; returns the steps that ran."""
        ran = []
        while self.queue and len(ran) < limit:
            step, target = self.queue.pop(0)
            ran.append(step)
            if step == "handle_event":
                events.handle_event(self.ctx, target)
            else:
                try:
                    steps.run_step(self.ctx, step, target)
                except RetryableError:
                    pass  # Celery would retry later; tests trigger the later event themselves
        return ran

    def new_return(self, units: int = 3, **body) -> str:
        items = requests.get(f"{self.rlm_url}/api/v1/companies/90/items", auth=("demo", "demo-rlm-key"),
                             params={"style_number": "CB11D10"}, timeout=5).json()["data"][0]
        skus = [{"sku": f"CB11D10-{items['color']}-{s['size']}", "barcode": s["upc"], "title": "Blouse",
                 "price": "88.00", "return_reason": "Too small"} for s in items["skus"]]
        lines = [skus[0], skus[0], skus[1]][:units]
        payload = {"order_name": "#2001", "address": {"name": "Pat", "state": "Texas", "country_code": "US"},
                   "line_items": lines, **body}
        r = requests.post(f"{self.loop_url}/_sim/returns", json=payload, timeout=5)
        r.raise_for_status()
        return str(r.json()["id"])

    def ingest(self, loop_id: str) -> int:
        """What a webhook (or the list pull) does: read the return from Loop and record it."""
        return events.ingest_return(self.ctx, self.merchant, self.ctx.loop(self.merchant).get_return(loop_id),
                                      cause="test")

    def receive(self, ra_number: int, scenario: str) -> None:
        url = f"{self.rlm_url}/_sim/companies/90/return-authorizations/{ra_number}/receive"
        requests.post(url, json={"scenario": scenario}, timeout=5).raise_for_status()

    def poll(self) -> None:
        receiving.poll_receipts(self.ctx, "demo")

    def ret(self, return_id: int):
        from integration.store.models import Return

        with self.ctx.sessions() as s:
            return s.get(Return, return_id)

    def loop_record(self, loop_id: str) -> dict:
        return requests.get(f"{self.loop_url}/_sim/returns/{loop_id}", timeout=5).json()

    def rlm_ra(self, ra_number: int) -> dict:
        return requests.get(f"{self.rlm_url}/api/v1/companies/90/return-authorizations/{ra_number}",
                            auth=("demo", "demo-rlm-key"), timeout=5).json()


@pytest.fixture
def harness_for(sandboxes, sessions):
    """harness_for(**criteria) → a Harness whose demo merchant uses those criteria."""
    for name in ("loop", "rlm"):
        requests.post(f"{sandboxes[name].url}/_sim/reset", timeout=5)

    def make(merchant_changes: dict | None = None, **criteria) -> Harness:
        config = demo_merchant_config()
        config.update(loop_base_url=sandboxes["loop"].url, rlm_base_url=sandboxes["rlm"].url,
                      **(merchant_changes or {}))
        merchant = parse_merchants([config])["demo"]
        merchant = replace(merchant, criteria=replace(Criteria(), **criteria))
        settings = replace(load_settings(), loop_settle_s=0.0)
        h = Harness(Context(settings=settings, merchants={"demo": merchant}, sessions=sessions,
                            enqueue=lambda step, target: h.queue.append((step, target))),
                    sandboxes["loop"].url, sandboxes["rlm"].url)
        return h

    return make


def later(h: Harness, seconds: float):
    """Move the service's clock forward (grace periods, expiry) without sleeping."""
    base = h.ctx.now()
    h.ctx.now = lambda: base + timedelta(seconds=seconds)
