"""The Loop sandbox's hostile settings, over real HTTP: processing delays drawn from a distribution,
processing that fails a few times before it succeeds (with byte-identical failure webhooks), and
webhook deliveries held back while later ones go out. See docs/contracts.md, "Loop sandbox settings".
"""
from __future__ import annotations

import statistics
import time

import pytest
import requests

from sandbox.common import ServerThread
from sandbox.loop.app import create_app

KEY = {"X-Authorization": "hostile-key"}
SECRET = "hostile-secret"


class Loop:
    """The sandbox's API and /_sim controls over HTTP."""

    def __init__(self, url: str):
        self.url = url

    def sim(self, path: str, json=None, method: str = "post") -> requests.Response:
        return requests.request(method, f"{self.url}/_sim{path}", json=json, timeout=5)

    def config(self, **settings) -> dict:
        response = self.sim("/config", settings)
        assert response.status_code == 200, response.text
        return response.json()

    def new_return(self, n: int = 1) -> int:
        body = {"order_name": f"#{1000 + n}", "line_items": [{"sku": "CB11D10-BLUE-S", "price": "88.00"}] * 2}
        return self.sim("/returns", body).json()["id"]

    def process(self, return_id: int) -> None:
        answer = requests.post(f"{self.url}/api/v1/warehouse/return/{return_id}/process", headers=KEY, timeout=5)
        assert answer.json() == "true"

    def subscribe(self, url: str, *triggers: str) -> None:
        for trigger in triggers:
            body = {"topic": trigger.rsplit(".", 1)[0], "trigger": trigger, "url": url, "status": "active"}
            assert requests.post(f"{self.url}/api/v1/webhooks", json=body, headers=KEY, timeout=5).ok

    def internal(self, return_id: int) -> dict:
        return self.sim(f"/returns/{return_id}", method="get").json()

    def stats(self, return_id: int) -> dict:
        return self.sim("/stats", method="get").json()["returns"][str(return_id)]

    def deliveries(self) -> list[dict]:
        return self.sim("/deliveries", method="get").json()["deliveries"]

    def wait(self, return_id: int, ready, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while not ready(found := self.internal(return_id)) and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


@pytest.fixture(scope="module")
def served():
    app = create_app({"api_keys": ["hostile-key"], "webhook_secret": SECRET, "process_delay_s": 0.05,
                      "webhook_retry_base_s": 0.05, "webhook_timeout_s": 2.0, "rate_limit_per_minute": 100_000})
    server = ServerThread(app).start()
    yield server
    server.stop()
    app.extensions["loop_sandbox"].shutdown()


@pytest.fixture
def loop(served):
    sandbox = Loop(served.url)
    sandbox.sim("/reset")
    yield sandbox
    sandbox.sim("/reset")  # cancels processing jobs still waiting


def delays(loop: Loop, ids: list[int]) -> list[float]:
    return [loop.internal(i)["processing_jobs"][0]["delay_s"] for i in ids]


# --- processing delay -------------------------------------------------------------------------------

def test_process_delay_is_drawn_per_job_from_a_seeded_log_normal(loop):
    spec = {"min_s": 2, "median_s": 30, "max_s": 600}

    def run() -> list[float]:
        loop.config(seed=11, process_delay_s=spec)
        ids = [loop.new_return(n) for n in range(60)]
        for return_id in ids:
            loop.process(return_id)
        assert all(loop.internal(i)["state"] == "open" for i in ids)  # only queued, for seconds to minutes
        return delays(loop, ids)

    first = run()
    assert all(2 <= d <= 600 for d in first) and len(set(first)) > 50
    assert 15 <= statistics.median(first) <= 60
    assert sum(d > 65 for d in first) >= 5  # past the service's settle time
    loop.sim("/reset")
    assert run() == first  # same seed, same returns: same delays


def test_process_delay_uniform_range_is_waited_out(loop):
    loop.config(process_delay_s={"min_s": 0.4, "max_s": 0.6})
    return_id = loop.new_return()
    loop.process(return_id)
    assert 0.4 <= loop.internal(return_id)["processing_jobs"][0]["delay_s"] <= 0.6
    time.sleep(0.2)
    assert loop.internal(return_id)["state"] == "open"
    done = loop.wait(return_id, lambda r: r["state"] == "closed")
    assert done["processing_jobs"][0]["outcome"] == "processed" and done["processing_pending"] == 0


@pytest.mark.parametrize("value", [
    -1, 86_401, "3", True, None, {"min_s": 1}, {"min_s": 5, "max_s": 1}, {"min_s": 0, "median_s": 0, "max_s": 1},
    {"min_s": 1, "median_s": 9, "max_s": 5}, {"min_s": 1, "max_s": 2, "mean_s": 1}, {"min_s": "1", "max_s": 2},
    [1, 2],
])
def test_process_delay_refuses_what_it_cannot_draw(loop, value):
    answer = loop.sim("/config", {"process_delay_s": value})
    assert answer.status_code == 422 and "process_delay_s" in answer.json()["errors"]


def test_seed_setting_must_be_an_integer_or_null(loop):
    assert loop.sim("/config", {"seed": "7"}).json()["errors"] == {"seed": ["must be null or an integer"]}
    assert loop.config(seed=None)["seed"] is None and loop.config(seed=7)["seed"] == 7


# --- processing failures ------------------------------------------------------------------------------

def test_processing_fails_twice_then_succeeds_with_byte_identical_failure_webhooks(loop, receiver):
    loop.subscribe(receiver.url(), "return.processing.failed", "return.closed")
    return_id = loop.new_return()
    loop.config(processing_fails={str(return_id): 2})
    for attempt in (1, 2):
        loop.process(return_id)
        receiver.wait_for(attempt)
        assert loop.wait(return_id, lambda r: r["processing_pending"] == 0)["state"] == "open"
    first, second = receiver.hits
    assert first["body"] == second["body"]  # Loop's payload has no timestamp or nonce
    assert first["headers"]["X-Loop-Signature"] == second["headers"]["X-Loop-Signature"]
    assert receiver.payloads()[0] == {"topic": "return.processing", "trigger": "return.processing.failed",
                                      "return_id": return_id, "return_state": "open",
                                      "message": "Return failed to process", "source": "api"}
    loop.process(return_id)
    assert loop.wait(return_id, lambda r: r["state"] == "closed")["state"] == "closed"
    receiver.wait_for(3)
    assert receiver.payloads()[2]["trigger"] == "return.closed"
    internal = loop.internal(return_id)
    assert [j["outcome"] for j in internal["processing_jobs"]] == ["failed", "failed", "processed"]
    assert [h["cause"] for h in internal["history"]] == ["created", "processing failed", "processing failed",
                                                         "processed"]
    counts = loop.stats(return_id)
    assert (counts["process"], counts["processing_failed"], counts["refunds"]) == (3, 2, 1)


def test_processing_failure_rate_picks_the_same_returns_for_the_same_seed(loop):
    def failing() -> list[int]:
        loop.config(seed=5, processing_failure_rate=0.5, processing_failure_repeat=1, process_delay_s=0.01)
        ids = [loop.new_return(n) for n in range(20)]
        for return_id in ids:
            loop.process(return_id)
        done = {i: loop.wait(i, lambda r: r["processing_pending"] == 0) for i in ids}
        return [i for i in ids if done[i]["processing_failed"] == 1 and done[i]["state"] == "open"]

    chosen = failing()
    assert 3 <= len(chosen) <= 17
    for return_id in chosen:  # repeat 1: the second attempt succeeds
        loop.process(return_id)
        assert loop.wait(return_id, lambda r: r["state"] == "closed")["state"] == "closed"
    loop.sim("/reset")
    assert failing() == chosen


def test_processing_fails_list_still_fails_every_attempt(loop):
    ids = [loop.new_return(1), loop.new_return(2)]
    loop.config(processing_fails=[ids[0]], process_delay_s=0.01)
    for _ in range(3):
        for return_id in ids:
            if loop.internal(return_id)["state"] == "open":
                loop.process(return_id)
        time.sleep(0.1)
    assert loop.wait(ids[0], lambda r: r["processing_pending"] == 0)["processing_failed"] == 3
    assert loop.internal(ids[1])["state"] == "closed"


@pytest.mark.parametrize("settings", [
    {"processing_fails": {"x": 1}}, {"processing_fails": {"1": -1}}, {"processing_fails": {"1": True}},
    {"processing_fails": "yes"}, {"processing_failure_rate": 1.5}, {"processing_failure_rate": "0.5"},
    {"processing_failure_repeat": 0}, {"processing_failure_repeat": 2.5},
])
def test_processing_failure_settings_are_validated(loop, settings):
    answer = loop.sim("/config", settings)
    assert answer.status_code == 422 and set(answer.json()["errors"]) == set(settings)


# --- held-back webhook deliveries ---------------------------------------------------------------------

def test_a_held_delivery_arrives_after_a_later_one(loop, receiver):
    loop.subscribe(receiver.url(), "return.created")
    loop.config(webhook_delay={"probability": 1, "min_s": 0.6, "max_s": 0.6})
    held = loop.new_return(1)
    loop.config(webhook_delay=None)
    on_time = loop.new_return(2)
    receiver.wait_for(2)
    assert [int(p["id"]) for p in receiver.payloads()] == [on_time, held]
    assert receiver.hits[1]["at"] - receiver.hits[0]["at"] >= 0.4
    assert {d["return_id"]: d["held_s"] for d in loop.deliveries()} == {held: 0.6, on_time: None}


def test_webhook_delay_holds_a_seeded_share_of_deliveries(loop, receiver):
    def arrivals() -> tuple[list[int], list[int]]:
        loop.subscribe(receiver.url(), "return.created")
        # Held longer than creating the 12 returns takes on a busy machine (0.2 s was not).
        loop.config(seed=3, webhook_delay={"probability": 0.5, "min_s": 1.5, "max_s": 2.0})
        for n in range(12):
            loop.new_return(n)
        receiver.wait_for(12)
        held = [d["return_id"] for d in loop.deliveries() if d["held_s"] is not None]
        return held, [int(p["id"]) for p in receiver.payloads()]

    held, order = arrivals()
    assert 2 <= len(held) <= 10
    assert order != sorted(order) and sorted(order[-len(held):]) == held  # the held ones come last
    loop.sim("/reset")
    receiver.hits.clear()
    assert arrivals()[0] == held


@pytest.mark.parametrize("value", [
    {"probability": 2, "min_s": 0, "max_s": 1}, {"probability": 0.5, "min_s": 2, "max_s": 1},
    {"probability": 0.5}, {"min_s": 0, "max_s": 1, "every": 2}, {"min_s": 0, "max_s": 100_000}, 5,
])
def test_webhook_delay_is_validated(loop, value):
    answer = loop.sim("/config", {"webhook_delay": value})
    assert answer.status_code == 422 and "webhook_delay" in answer.json()["errors"]
