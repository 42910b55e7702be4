"""A merchant out of Loop tokens does not hold a worker slot: a real Celery worker (one pool
process, queue `loop`) on a real Valkey, real HTTP to the Loop sandbox, on SQLite and PostgreSQL.

Two merchants with their own Loop keys. `busy` has used its whole bucket and three decided
returns queued ahead of `quiet`'s one. Before the limiter stopped sleeping, the one slot slept
for each of busy's tokens (up to 20 s a call) and quiet waited behind them; now busy's steps are
rescheduled at once and quiet's return is acted on first, with busy's untouched in Loop.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests

from integration.infra.embedded_redis import start_valkey
from integration.infra.ratelimit import TokenBucket, bucket_name
from integration.merchants import demo_merchant_config
from integration.store.models import Return, utcnow
from integration.workflow import lifecycle as lc
from sandbox.common import ServerThread
from sandbox.loop import create_app as loop_app
from stack.merchant_toml import merchants_toml
from tests.stack.helpers import wait_for
from workers.names import publisher

ROOT = Path(__file__).resolve().parents[2]
PER_MINUTE = 4  # a token every 15 s: each of busy's calls would have slept in the slot



@pytest.fixture(scope="module")
def valkey(tmp_path_factory):
    proc, url = start_valkey(tmp_path_factory.mktemp("valkey"), persistence=False)
    yield url
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def loop_sim():
    app = loop_app({"api_keys": ["busy-key", "quiet-key"], "process_delay_s": 60})
    server = ServerThread(app).start()
    yield server
    app.extensions["loop_sandbox"].shutdown()
    server.stop()


@pytest.fixture
def worker(valkey, loop_sim, database_url, sessions, tmp_path):
    merchants = []
    for name in ("busy", "quiet"):
        config = demo_merchant_config()
        config.update(name=name, loop_api_key=f"{name}-key", loop_base_url=loop_sim.url)
        merchants.append(config)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": valkey, "DATA_DIR": str(tmp_path),
           "MERCHANTS_TOML": merchants_toml(merchants), "LOOP_REQUESTS_PER_MINUTE": str(PER_MINUTE),
           "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "loop",
                             "-c", "1", "--without-gossip", "--without-mingle", "-l", "info"],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        redis.Redis.from_url(valkey).flushall()


def _decided(sessions, loop_sim, merchant: str) -> tuple[int, str]:
    payload = {"order_name": "#2001", "line_items": [{"sku": "CB11D10-BLUE-S", "price": "88.00",
                                                      "title": "Blouse", "return_reason": "Too small"}]}
    loop_id = str(requests.post(f"{loop_sim.url}/_sim/returns", json=payload, timeout=5).json()["id"])
    with sessions() as s:
        ret = Return(merchant=merchant, loop_return_id=loop_id, state=lc.DECIDED, decision="process",
                     rma_number=4000 + int(loop_id) % 1000, units=[], rma_lines=[])
        lc.set_wait(ret, lc.Wait.STEP, utcnow() + timedelta(seconds=900))
        s.add(ret)
        s.commit()
        return ret.id, loop_id


def _actions(loop_sim, loop_id: str) -> list:
    return requests.get(f"{loop_sim.url}/_sim/returns/{loop_id}", timeout=5).json().get("actions", [])


def test_a_merchant_out_of_tokens_holds_no_slot_while_another_is_acted_on(worker, valkey, loop_sim, sessions):
    busy_bucket = TokenBucket(redis.Redis.from_url(valkey), bucket_name("loop", "busy-key"), PER_MINUTE)
    while busy_bucket.try_acquire(1) == 0:  # busy has spent its burst on earlier work
        pass
    busy = [_decided(sessions, loop_sim, "busy") for _ in range(3)]
    quiet_id, quiet_loop = _decided(sessions, loop_sim, "quiet")
    app = publisher(valkey)
    for return_id, _ in busy:  # queued first: the slot reaches them before quiet's
        app.send_task("loop.act_in_loop", args=[return_id])
    app.send_task("loop.act_in_loop", args=[quiet_id])

    def state(return_id: int) -> Return:
        with sessions() as s:
            return s.get(Return, return_id)

    wait_for(lambda: state(quiet_id).state == lc.LOOP_ACTIONED, timeout=60, what="quiet's return acted on")
    assert [a["action"] for a in _actions(loop_sim, quiet_loop)] == ["process"]
    for return_id, loop_id in busy:  # rescheduled for busy's tokens, nothing sent, nothing claimed
        ret = state(return_id)
        assert ret.state == lc.DECIDED and ret.loop_action_claimed_at is None and ret.step_attempts == 0
        assert ret.waiting_for in (lc.Wait.STEP, lc.Wait.SLOT) and _actions(loop_sim, loop_id) == []
