"""The periodic jobs fanned out per merchant (workers/fanout.py, workers/tasks.py): one task per
merchant, no second one while the first waits, a per-merchant lock, and a merchant without a
free slot skipped until its next run. On fakeredis; the tasks' sends recorded."""
from __future__ import annotations

import fakeredis
import pytest

from integration.errors import NoSlot
from workers import fanout

tasks = pytest.importorskip("workers.tasks")


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


def test_one_task_per_merchant_and_none_while_one_still_waits(client):
    sent = []
    names = ["acme", "zebra", "kite"]
    assert fanout.fan_out(client, "poll_receipts", names, 300, sent.append) == 3
    assert sent == names
    assert fanout.fan_out(client, "poll_receipts", names, 300, sent.append) == 0  # all still queued
    fanout.started(client, "poll_receipts", "zebra")  # zebra's run left the queue
    assert fanout.fan_out(client, "poll_receipts", names, 300, sent.append) == 1
    assert sent[-1] == "zebra"
    assert fanout.fan_out(client, "reconcile", names, 900, sent.append) == 3  # jobs are separate


def test_a_lost_message_blocks_its_merchant_a_few_intervals_at_most(client):
    fanout.fan_out(client, "poll_receipts", ["acme"], 300, lambda name: None)
    assert 0 < client.ttl(fanout.pending_key("poll_receipts", "acme")) <= fanout.pending_ttl_s(300) == 900
    assert fanout.pending_ttl_s(1) == 60


def test_a_thousand_merchants_cost_one_round_trip(client, monkeypatch):
    calls = []
    execute = fakeredis.FakeRedis.pipeline

    def counting_pipeline(self, *args, **kwargs):
        calls.append(1)
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(fakeredis.FakeRedis, "pipeline", counting_pipeline)
    sent = []
    assert fanout.fan_out(client, "poll_receipts", [f"m{i}" for i in range(1000)], 300, sent.append) == 1000
    assert calls == [1] and len(set(sent)) == 1000


@pytest.fixture
def wired(client, monkeypatch):
    """The tasks module on fakeredis, three merchants, every send recorded."""
    sent = []
    merchants = {name: object() for name in ("acme", "zebra", "kite")}
    monkeypatch.setattr(tasks, "_redis", lambda: client)
    monkeypatch.setattr(tasks.runtime, "merchants", lambda: merchants)
    monkeypatch.setattr(tasks.app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
    monkeypatch.setattr(tasks, "context", lambda: "ctx")
    return sent


def test_the_beat_job_only_publishes_one_task_per_merchant(wired):
    tasks.poll_receipts.run()
    assert sorted(wired) == [("rlm.poll_receipts_for", [m]) for m in ("acme", "kite", "zebra")]
    wired.clear()
    tasks.reconcile_loop.run()
    assert sorted(wired) == [("loop.reconcile_for", [m]) for m in ("acme", "kite", "zebra")]


def test_a_merchants_run_holds_its_own_lock_and_frees_the_next_fan_out(wired, client, monkeypatch):
    ran = []
    monkeypatch.setattr(tasks.receiving, "poll_receipts", lambda ctx, name: ran.append(name))
    tasks.poll_receipts.run()
    wired.clear()
    held = client.lock("lock:poll_receipts:acme", timeout=15)
    assert held.acquire(blocking=False)  # acme's previous run is still going
    tasks.poll_receipts_for.run("acme")
    tasks.poll_receipts_for.run("zebra")
    assert ran == ["zebra"]  # acme's overlapping run did nothing; zebra's went ahead
    tasks.poll_receipts.run()
    assert sorted(wired) == [("rlm.poll_receipts_for", ["acme"]), ("rlm.poll_receipts_for", ["zebra"])]


def test_a_merchant_without_a_free_slot_is_skipped_until_its_next_run(wired, monkeypatch, caplog):
    def busy(ctx, name):
        raise NoSlot("rlm", "at most 4 calls at once for this merchant", retry_after=1.0)

    monkeypatch.setattr(tasks.receiving, "poll_receipts", busy)
    caplog.set_level("INFO", logger=tasks.log.name)
    tasks.poll_receipts_for.run("acme")  # no exception: nothing to retry, the next run polls
    assert "skipped for merchant acme" in caplog.text


def test_a_merchant_removed_since_the_fan_out_is_not_run(wired, monkeypatch):
    monkeypatch.setattr(tasks.receiving, "poll_receipts", lambda ctx, name: pytest.fail("ran"))
    tasks.poll_receipts_for.run("gone")


def test_the_fan_out_publishes_one_message_per_merchant_to_a_real_broker(tmp_path):
    """On a real Valkey through the service's transport: the queue, declared once for the whole
    fan-out, gets one message per merchant, each naming its merchant (a worker runs it)."""
    import json

    import redis

    from integration.infra.embedded_redis import start_valkey
    from integration.workflow.steps import TASK_QUEUES
    from workers.names import publisher

    proc, url = start_valkey(tmp_path / "valkey", persistence=False)
    try:
        client, app = redis.Redis.from_url(url), publisher(url)
        task = "rlm.poll_receipts_for"
        names = [f"m{i:03d}" for i in range(50)]
        with fanout.publisher_for(app, task) as send:
            assert fanout.fan_out(client, "poll_receipts", names, 60, send) == 50
        messages = [json.loads(m) for m in client.lrange(TASK_QUEUES[task], 0, -1)]
        assert sorted(m["headers"]["argsrepr"] for m in messages) == [repr([n]) for n in names]
        assert {m["headers"]["task"] for m in messages} == {task}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
