"""workers/broker.py on a real Valkey: Celery's commands share the process's one Redis pool with
the service's own client, every connection is named, and kombu's restore of a rejected message
(a WATCH transaction that looks up the bindings on a second connection) still works in a pool
sized for it (with one connection it fails: "No connection available")."""
from __future__ import annotations

import os
from collections import Counter

import pytest
import redis
from kombu import Connection, Exchange, Queue

from integration.infra import redis_pool
from integration.infra.embedded_redis import start_valkey
from workers import broker


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = start_valkey(tmp_path_factory.mktemp("broker") / "valkey", persistence=False)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def fresh_pools(monkeypatch):
    """A role of this test's own, and no pool left from another test."""
    monkeypatch.setattr(redis_pool, "_pools", {})
    monkeypatch.setattr(redis_pool, "_clients", {})
    monkeypatch.setitem(redis_pool._role, "name", "")
    monkeypatch.setitem(redis_pool._connections, "n", 0)
    monkeypatch.delenv("REDIS_POOL_SIZE", raising=False)
    monkeypatch.delenv("DYNO", raising=False)
    broker.install()
    yield
    for (pid, _), pool in list(redis_pool._pools.items()):
        if pid == os.getpid():
            pool.disconnect()


def ours(url: str, role: str) -> Counter[str]:
    """This test's connections on the server, by name (other tests' are named otherwise)."""
    with redis.Redis.from_url(url) as admin:
        return Counter(c["name"] for c in admin.client_list() if c.get("name", "").startswith(f"rlm-loop:{role}:"))


def test_publishing_and_the_service_share_one_named_connection(server, fresh_pools):
    redis_pool.configure("test-publisher")
    queue = Queue("budget-publish", Exchange("budget-publish"), routing_key="budget-publish")
    with Connection(server) as conn:
        producer = conn.Producer()
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="budget-publish", declare=[queue])
        redis_pool.client(server).incr("budget-counter")  # the limiter, a lock, the metrics
        assert redis_pool.client(server).llen("budget-publish") == 1
        assert ours(server, "test-publisher") == {"rlm-loop:test-publisher:shared": 1}


def test_a_rejected_message_is_restored_through_a_pool_of_two(server, fresh_pools):
    redis_pool.configure("test-consumer", connections=2)  # as a worker's main process
    queue = Queue("budget-restore", Exchange("budget-restore"), routing_key="budget-restore")
    with Connection(server, transport_options={"visibility_timeout": 3600}) as conn:
        channel = conn.channel()
        queue(channel).declare()
        conn.Producer(channel).publish({"n": 2}, exchange=queue.exchange, routing_key="budget-restore")
        message = queue(channel).get(no_ack=False)
        assert message is not None and message.payload == {"n": 2}
        message.reject(requeue=True)  # restore_by_tag: WATCH + the bindings lookup, nested
        again = queue(channel).get(no_ack=True)
        assert again is not None and again.payload == {"n": 2}
        assert sum(ours(server, "test-consumer").values()) <= 2
