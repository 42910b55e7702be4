"""The shared Loop token bucket: several real processes on one real Valkey, and the client under Loop's limit."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis

from integration.errors import NoSlot, RetryableError
from integration.infra.embedded_redis import start_valkey
from integration.infra.ratelimit import TokenBucket
from integration.loop.client import LoopClient
from tests.infra.bucket_worker import hammer
from tests.sandboxes import LOOP_KEY, TIMEOUT


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    proc, url = start_valkey(tmp_path_factory.mktemp("valkey"), persistence=False)
    yield url
    proc.terminate()
    proc.wait(timeout=5)


def test_processes_together_stay_within_the_bucket(redis_url):
    per_minute, burst, workers = 120, 5, 3
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    ready, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=hammer, args=(redis_url, "loop:shared", per_minute, burst, ready, out))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        per_process = [out.get(timeout=30) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
    stamps = sorted(t for taken in per_process for t in taken)
    elapsed = stamps[-1] - stamps[0] + 0.05  # timestamps are read just after each take
    ceiling = per_minute / 60 * elapsed + burst
    assert len(stamps) <= ceiling
    assert len(stamps) >= ceiling - 3  # they did hammer: the bucket, not idleness, held them back
    assert sum(1 for taken in per_process if taken) >= 2  # several processes drew on the one bucket


def test_loop_client_with_a_bucket_under_loops_limit_never_sees_429(loop_sim, redis_url):
    # Loop's 300/min over 60 s, compressed: 10 requests per 1 s window. The bucket allows 2 + 6/s.
    limit = {"rate_limit_per_minute": 600, "rate_limit_window_s": 1.0}
    loop_sim.post("/config", limit)
    bucket = TokenBucket(redis.Redis.from_url(redis_url), "loop:client", per_minute=360, burst=2)
    client = LoopClient(loop_sim.url, LOOP_KEY, timeout=TIMEOUT, limiter=bucket)
    calls, errors = [], []

    def work():
        stop_at = time.monotonic() + 2.0
        while time.monotonic() < stop_at:
            try:
                client.list_webhooks()
                calls.append(1)
            except NoSlot as exc:  # our bucket's refusal: nothing sent; come back at its turn
                time.sleep(min(exc.retry_after or 0.05, 0.2))
            except RetryableError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and loop_sim.get("/stats")["rate_limited"] == 0
    assert len(calls) > 10  # more than one window allows: the pacing mattered

    # The same calls without the bucket run into the limit.
    loop_sim.post("/reset")
    loop_sim.post("/config", limit)
    unpaced = LoopClient(loop_sim.url, LOOP_KEY, timeout=TIMEOUT)
    with pytest.raises(RetryableError) as caught:
        for _ in range(15):
            unpaced.list_webhooks()
    assert caught.value.status == 429


def test_turns_let_a_burst_go_at_once_then_space_the_rest_at_the_rate(redis_url):
    """A merchant's steps book their turns before they are published: the first `burst` go now,
    each later one a step of the bucket's rate after the one before, whoever books it."""
    client = redis.Redis.from_url(redis_url)
    bucket = TokenBucket(client, "loop:turns", per_minute=60, burst=3)  # one a second
    waits = [bucket.turn() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert [round(w) for w in waits[3:]] == [1, 2, 3]
    other = TokenBucket(redis.Redis.from_url(redis_url), "loop:turns", per_minute=60, burst=3)
    assert round(other.turn(2)) == 5  # another process books after them; two requests, two steps
    assert 5 < client.ttl(bucket.key) <= 70  # the booking outlives its last turn


def test_a_booked_turn_takes_no_token_and_another_key_is_not_delayed(redis_url):
    client = redis.Redis.from_url(redis_url)
    busy = TokenBucket(client, "loop:busy-turns", per_minute=60, burst=2)
    for _ in range(100):
        busy.turn()
    assert busy.try_acquire(2) == 0.0  # the step, when it runs, takes its tokens itself
    assert TokenBucket(client, "loop:quiet-turns", per_minute=60, burst=2).turn() == 0.0
