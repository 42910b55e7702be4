"""The Loop sandbox's delivery policy against docs/loop-api.md §5.2's table: which answers are retried."""
from __future__ import annotations

import threading
import time

import pytest
from flask import Flask

from sandbox.common import ServerThread

RETRIED = [408, 429, 500, 502, 503, 504]  # 500, 503 documented; the others assumed [A]
NOT_RETRIED = [400, 401, 403, 404, 405]


class ScriptedReceiver:
    """Answers each webhook with the next scripted status, then 200."""

    def __init__(self):
        self.script: list[int] = []
        self._lock = threading.Lock()
        app = Flask("hook")
        app.add_url_rule("/hook", "hook", self._hook, methods=["POST"])
        self.server = ServerThread(app).start()

    def _hook(self):
        with self._lock:
            return "", self.script.pop(0) if self.script else 200


@pytest.fixture(scope="module")
def receiver():
    made = ScriptedReceiver()
    yield made
    made.server.stop()


@pytest.fixture
def delivered(loop, loop_sim, receiver):
    """Subscribe to return.created, answer the first delivery with `status`, and report the outcome."""
    loop_sim.post("/config", {"webhook_retry_base_s": 0.02})
    loop.ensure_webhooks(f"{receiver.server.url}/hook", {"return": ["return.created"]})

    def deliver(status: int) -> dict:
        receiver.script = [status]
        loop_sim.new_return()
        deadline = time.monotonic() + 5
        while (outcome := loop_sim.get("/deliveries")["deliveries"][-1])["outcome"] == "pending":
            assert time.monotonic() < deadline, outcome
            time.sleep(0.02)
        return outcome

    return deliver


@pytest.mark.parametrize("status", RETRIED)
def test_retried_answers_get_another_attempt(delivered, status):
    outcome = delivered(status)
    assert outcome["outcome"] == "delivered"
    assert [a["status_code"] for a in outcome["attempts"]] == [status, 200]


@pytest.mark.parametrize("status", NOT_RETRIED)
def test_refusing_answers_end_the_delivery(delivered, status):
    outcome = delivered(status)
    assert (outcome["outcome"], len(outcome["attempts"])) == ("failed", 1)
