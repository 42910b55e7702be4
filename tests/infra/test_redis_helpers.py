"""The Loop token bucket and the periodic-job lock on fakeredis (its Lua runtime runs the
bucket's script): fast and with a clock the test controls. The real-server tests stay in
tests/infra/test_rate_limit.py (several processes on one Valkey) and tests/stack."""
from __future__ import annotations

import time

import fakeredis
import pytest

from integration.errors import NoSlot, NotSent
from integration.infra.locks import single_run
from integration.infra.ratelimit import TokenBucket, bucket_name


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


@pytest.fixture
def clock(monkeypatch):
    """Redis's clock (TIME, key expiry) under the test's control: `clock.now += seconds`."""
    class Clock:
        now = 1_800_000_000.0

        def __call__(self) -> float:
            return self.now

    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


def take(bucket: TokenBucket) -> float:
    """One attempt at a token: 0 when taken, else the seconds until the next one."""
    return float(bucket._take(keys=[bucket.key], args=[bucket.rate, bucket.burst]))


# --- the token bucket ---------------------------------------------------------------------
def test_the_bucket_admits_its_burst_at_once_then_names_the_wait(client, clock):
    bucket = TokenBucket(client, "loop:k", per_minute=60, burst=5)  # one token a second
    assert [take(bucket) for _ in range(5)] == [0.0] * 5
    assert take(bucket) == pytest.approx(1.0)
    clock.now += 0.25
    assert take(bucket) == pytest.approx(1.75)  # told the turn after the first refused caller's
    clock.now += 0.75
    assert take(bucket) == 0.0  # a refusal takes nothing: it leaves no debt, the token is there


def test_the_bucket_refills_at_its_rate_up_to_the_burst(client, clock):
    bucket = TokenBucket(client, "loop:k", per_minute=120, burst=3)  # two tokens a second
    assert [take(bucket) for _ in range(3)] == [0.0] * 3
    clock.now += 1.0
    assert [take(bucket) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    clock.now += 3600  # idle for an hour: the burst again, never more
    assert [take(bucket) > 0 for _ in range(4)] == [False, False, False, True]


def test_buckets_are_per_name_and_the_state_expires_when_idle(client, clock):
    one = TokenBucket(client, bucket_name("loop", "key-1"), per_minute=60, burst=1)
    two = TokenBucket(client, bucket_name("loop", "key-2"), per_minute=60, burst=1)
    assert (take(one), take(two)) == (0.0, 0.0)
    assert take(one) > 0 and take(two) > 0
    assert "key-1" not in one.key  # the API key itself never goes to Redis
    assert 0 < client.ttl(one.key) <= 2 + 60  # the refused caller's turn is remembered
    clock.now += 63
    assert not client.exists(one.key)


def test_acquire_never_sleeps_it_hands_the_wait_back(client, clock, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a worker slot slept for a token"))
    bucket = TokenBucket(client, "loop:k", per_minute=6, burst=2)  # a token per 10 s
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(NoSlot) as refused:
        bucket.acquire()
    assert isinstance(refused.value, NotSent)  # nothing was sent: safe to send again
    assert refused.value.retry_after == pytest.approx(10.0)
    assert bucket.waited_s == pytest.approx(10.0)  # the metric: time handed back, not slept


def test_try_acquire_takes_n_at_once_or_nothing(client, clock):
    bucket = TokenBucket(client, "loop:k", per_minute=60, burst=5)
    assert bucket.try_acquire(3) == 0.0
    assert bucket.try_acquire(3) == pytest.approx(1.0)  # 2 left: the third is a second away
    assert bucket.try_acquire(2) == 0.0  # the refusal took nothing
    assert bucket.try_acquire(1) > 0


def test_refused_callers_are_told_successive_turns_not_all_the_same_moment(client, clock):
    bucket = TokenBucket(client, "loop:k", per_minute=60, burst=2)  # one token a second
    assert bucket.try_acquire(2) == 0.0
    waits = [bucket.try_acquire(2) for _ in range(4)]  # four steps of two calls each
    assert waits == [pytest.approx(2.0), pytest.approx(4.0), pytest.approx(6.0), pytest.approx(8.0)]
    clock.now += 2.0
    assert bucket.try_acquire(2) == 0.0  # the first comes back at its turn: its tokens are there
    clock.now += 100  # a queue of turns long past is forgotten
    assert bucket.try_acquire(2) == 0.0
    assert bucket.try_acquire(2) == pytest.approx(2.0)  # only its own tokens to wait for


def test_prepaid_tokens_serve_a_steps_calls_and_the_unused_go_back(client, clock):
    bucket = TokenBucket(client, "loop:k", per_minute=60, burst=3)
    bucket.prepay(3)
    assert float(client.hget(bucket.key, "tokens")) == pytest.approx(0.0)
    bucket.acquire()  # from the prepaid ones: no Redis round trip needed, no refusal
    bucket.give_back()
    assert float(client.hget(bucket.key, "tokens")) == pytest.approx(2.0)
    bucket.give_back()  # nothing left to give: a no-op
    assert float(client.hget(bucket.key, "tokens")) == pytest.approx(2.0)
    with pytest.raises(NoSlot):
        bucket.prepay(3)  # two there, three needed: nothing taken
    assert float(client.hget(bucket.key, "tokens")) == pytest.approx(2.0)


# --- the periodic-job lock ------------------------------------------------------------------
def test_the_lock_lets_one_run_at_a_time_and_frees_itself_at_the_end(client):
    with single_run(client, "sweep", timeout=15) as first:
        assert first is True
        with single_run(client, "sweep", timeout=15) as second:
            assert second is False  # beat fired again, or a redelivery: this one does nothing
        with single_run(client, "reconcile", timeout=15) as other:
            assert other is True  # another job's lock is its own
    with single_run(client, "sweep", timeout=15) as next_run:
        assert next_run is True


def test_the_lock_of_a_killed_run_expires_after_its_timeout(client, clock):
    killed = client.lock("lock:poll_receipts", timeout=15)  # taken, then the worker died
    assert killed.acquire(blocking=False)
    with single_run(client, "poll_receipts", timeout=15) as mine:
        assert mine is False
    clock.now += 16
    with single_run(client, "poll_receipts", timeout=15) as mine:
        assert mine is True


def test_a_run_that_overran_its_lock_leaves_the_next_runs_lock_alone(client, clock):
    with single_run(client, "sweep", timeout=15) as slow:
        assert slow is True
        clock.now += 16  # expired while the slow run still works; the next run takes the lock
        later = client.lock("lock:sweep", timeout=15)
        assert later.acquire(blocking=False)
    assert client.get("lock:sweep") == later.local.token  # the slow run's end released nothing


# --- the per-merchant semaphore ---------------------------------------------------------------
def test_the_semaphore_admits_its_cap_then_refuses_without_waiting(client, clock, monkeypatch):
    from integration.infra.semaphore import Semaphore

    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a worker slot slept for a place"))
    rlm = Semaphore(client, "rlm:acme", cap=2, ttl_s=90)
    first, second = rlm.try_enter(), rlm.try_enter()
    assert first and second and first != second
    assert rlm.try_enter() is None
    with pytest.raises(NoSlot) as refused, rlm.held():
        pass
    assert refused.value.system == "rlm" and refused.value.retry_after > 0
    rlm.leave(first)
    with rlm.held():
        assert client.zcard(rlm.key) == 2
    assert client.zcard(rlm.key) == 1  # the block's place is left at its end


def test_a_holder_killed_mid_call_frees_its_place_after_its_expiry(client, clock):
    from integration.infra.semaphore import Semaphore

    rlm = Semaphore(client, "rlm:acme", cap=1, ttl_s=90)
    assert rlm.try_enter() is not None  # and the process dies: nobody leaves
    assert rlm.try_enter() is None
    clock.now += 91
    assert rlm.try_enter() is not None


def test_the_semaphore_leaves_its_place_when_the_call_fails(client, clock):
    from integration.infra.semaphore import Semaphore

    rlm = Semaphore(client, "rlm:acme", cap=1, ttl_s=90)
    with pytest.raises(RuntimeError), rlm.held():
        raise RuntimeError("RLM answered 503")
    assert rlm.try_enter() is not None


def test_refused_callers_get_turns_spaced_by_how_long_calls_take(client, clock):
    from integration.infra.semaphore import Semaphore

    rlm = Semaphore(client, "rlm:acme", cap=2, ttl_s=90)
    first = rlm.try_enter()
    clock.now += 0.4
    rlm.leave(first)  # calls take 0.4 s: a place frees every 0.2 s with two at once
    rlm.try_enter(), rlm.try_enter()
    waits = [rlm.enter()[1] for _ in range(3)]
    assert waits == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.6)]
