"""Merchant isolation in the steps: a merchant without a Loop token or a free RLM call slot has
its step rescheduled (nothing sent, no claim taken, no attempt counted), on both databases,
with the limiter and the semaphore on fakeredis (its Lua runtime runs their scripts). The real
worker on the real Valkey is in tests/workers/test_isolation_worker.py."""
from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
import requests

from integration.infra.ratelimit import TokenBucket, bucket_name
from integration.infra.semaphore import Semaphore
from integration.workflow import lifecycle as lc
from integration.workflow.runner import as_utc, slot_horizon_s
from integration.workflow.sweeper import sweep

from .conftest import later
from .test_paths import to_transmitted


@pytest.fixture
def limited(harness_for):
    """A harness whose demo merchant has a Loop bucket and an RLM semaphore on fakeredis, and
    whose delayed publications are recorded as (step, id, seconds)."""
    def make(per_minute: float = 60, burst: int = 4, rlm_cap: int = 2, **merchant_changes):
        h = harness_for(merchant_changes)
        client = fakeredis.FakeRedis()
        h.redis = client
        h.delayed = []
        h.ctx.loop_limiter_for = lambda m: TokenBucket(client, bucket_name("loop", m.loop_api_key),
                                                       per_minute, burst=burst)
        h.ctx.rlm_slots_for = lambda m: Semaphore(client, f"rlm:{m.name}", rlm_cap, ttl_s=60)
        h.ctx.enqueue_in = lambda step, target, seconds: h.delayed.append((step, target, seconds))
        return h

    return make


def decided(h) -> tuple[str, int]:
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "exact")
    h.poll()
    while h.queue and h.queue[0][0] != "act_in_loop":
        h.drain(limit=1)
    assert h.ret(rid).state == lc.DECIDED and h.queue == [("act_in_loop", rid)]
    return loop_id, rid


def drain_bucket(h) -> None:
    limiter = h.ctx.loop(h.merchant).limiter
    while limiter.try_acquire(1) == 0:
        pass


def loop_actions(h, loop_id: str) -> list:
    return h.loop_record(loop_id).get("actions", [])


def test_no_token_for_a_long_while_the_return_waits_for_a_slot_and_nothing_is_sent(limited):
    h = limited(per_minute=1, burst=2)  # a token a minute: two calls are two minutes away
    loop_id, rid = decided(h)
    drain_bucket(h)
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.DECIDED and ret.waiting_for == lc.Wait.SLOT
    assert ret.loop_action_claimed_at is None and ret.loop_call_sent_at is None  # no claim taken
    assert ret.step_attempts == 0  # a merchant's backlog parks nothing
    wait = (as_utc(ret.next_attempt_at) - h.ctx.now()).total_seconds()
    assert slot_horizon_s(h.ctx) < wait <= 121
    assert loop_actions(h, loop_id) == [] and h.delayed == [] and h.queue == []

    # Not yet within a sweep of its slot: the sweeper leaves it alone, and never counts it lost.
    assert sweep(h.ctx) == {"events": 0, "steps": 0, "due": 0, "slots": 0, "parked": 0}
    # Within a sweep of it: published now for delivery at its slot, with a lease past that.
    later(h, wait - slot_horizon_s(h.ctx) / 2)
    assert sweep(h.ctx)["slots"] == 1
    [(step, target, seconds)] = h.delayed
    assert (step, target) == ("act_in_loop", rid) and seconds == pytest.approx(slot_horizon_s(h.ctx) / 2, abs=1)
    ret = h.ret(rid)
    assert ret.waiting_for == lc.Wait.STEP
    assert as_utc(ret.next_attempt_at) > h.ctx.now() + timedelta(seconds=h.ctx.settings.stuck_after_s)

    # Its turn: tokens are there (a fresh bucket stands in for the minutes passing).
    h.ctx.loop(h.merchant).limiter = TokenBucket(fakeredis.FakeRedis(), "fresh", 60, burst=4)
    h.queue.append(("act_in_loop", rid))
    h.drain(limit=1)
    assert h.ret(rid).state == lc.LOOP_ACTIONED
    assert [a["action"] for a in loop_actions(h, loop_id)] == ["process"]  # once


def test_a_short_wait_is_published_with_that_delay_not_slept_on(limited, monkeypatch):
    import time

    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a worker slot slept for a token"))
    h = limited(per_minute=60, burst=2)  # a token a second
    loop_id, rid = decided(h)
    drain_bucket(h)
    h.drain()
    [(step, target, seconds)] = h.delayed
    assert (step, target) == ("act_in_loop", rid) and 0 < seconds <= 2.5
    ret = h.ret(rid)
    assert ret.state == lc.DECIDED and ret.waiting_for == lc.Wait.STEP and ret.step_attempts == 0
    assert ret.loop_action_claimed_at is None and loop_actions(h, loop_id) == []


def test_the_step_takes_its_calls_tokens_at_once_and_uses_exactly_those(limited):
    h = limited(per_minute=1, burst=4)
    _, rid = decided(h)
    key = h.ctx.loop(h.merchant).limiter.key
    before = float(h.redis.hget(key, "tokens"))
    h.drain()  # a process decision, first attempt: the call alone, one token
    assert h.ret(rid).state == lc.LOOP_ACTIONED
    assert before - float(h.redis.hget(key, "tokens")) == pytest.approx(1.0, abs=0.1)
    assert h.ctx.loop(h.merchant).limiter._prepaid == 0  # nothing left over for another step


def test_rlm_at_its_cap_for_the_merchant_reschedules_the_step_and_sends_nothing(limited, sandboxes):
    h = limited(rlm_cap=1)
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    assert h.queue == [("create_rma", rid)]
    busy = h.ctx.rlm(h.merchant).t.slots
    holder = busy.try_enter()  # another call of this merchant's is under way
    assert holder is not None and busy.try_enter() is None
    h.drain(limit=1)
    ret = h.ret(rid)
    assert ret.state == lc.RECEIVED and ret.rma_number is None and ret.step_attempts == 0
    [(step, target, seconds)] = h.delayed
    assert (step, target) == ("create_rma", rid) and 0 < seconds <= 2
    stats = requests.get(f"{sandboxes['rlm'].url}/_sim/stats", timeout=5).json()
    assert not stats.get("ras_per_external_ref", {}).get("90")  # nothing reached RLM
    busy.leave(holder)
    h.queue.append(("create_rma", rid))
    h.drain(limit=1)
    assert h.ret(rid).rma_number is not None
    assert h.redis.zcard(busy.key) == 0  # each call left its place


def test_another_merchants_slots_are_their_own(limited):
    h = limited(rlm_cap=1)
    mine = h.ctx.rlm(h.merchant).t.slots
    other = Semaphore(h.redis, "rlm:other", 1, ttl_s=60)
    assert mine.try_enter() is not None
    assert other.try_enter() is not None  # one merchant at its cap leaves the others theirs


def test_a_webhook_needing_a_loop_read_without_a_token_waits_its_turn_uncounted(limited):
    from integration.store.models import InboxStatus, WebhookEvent
    from integration.workflow import events

    h = limited(per_minute=60, burst=2)
    loop_id = h.new_return()
    with h.ctx.sessions() as s:
        ev = WebhookEvent(merchant="demo", dedupe_key="k1", body_sha256="k1", status="received", attempts=0,
                          payload={"topic": "return", "trigger": "return.updated", "loop_return_id": loop_id,
                                   "state": "open"})
        s.add(ev)
        s.commit()
        event_id = ev.id
    drain_bucket(h)
    events.handle_event(h.ctx, event_id)  # an unknown return's update: Loop must be read
    with h.ctx.sessions() as s:
        ev = s.get(WebhookEvent, event_id)
        assert ev.status == InboxStatus.RECEIVED and ev.attempts == 0  # our own limit: no attempt
        assert as_utc(ev.next_attempt_at) > h.ctx.now() + timedelta(seconds=h.ctx.settings.stuck_after_s)
    [(step, target, seconds)] = h.delayed
    assert (step, target) == ("handle_event", event_id) and 0 < seconds <= 2.5

    h.ctx.loop(h.merchant).limiter = TokenBucket(fakeredis.FakeRedis(), "fresh", 60, burst=4)
    events.handle_event(h.ctx, event_id)
    with h.ctx.sessions() as s:
        assert s.get(WebhookEvent, event_id).status == InboxStatus.DONE
    assert h.queue and h.queue[-1][0] == "create_rma"


class RefusesTheAction:
    """A limiter whose merchant runs out just before the action (after the read, if the step
    reads first), as when the tokens a step took ahead were fewer than its path needed."""

    def __init__(self, calls_allowed: int):
        self.calls = 0
        self.calls_allowed = calls_allowed
        self.waited_s = 0.0

    def prepay(self, n: int) -> None:
        pass

    def give_back(self) -> None:
        pass

    def acquire(self) -> None:
        self.calls += 1
        if self.calls > self.calls_allowed:
            from integration.errors import NoSlot

            raise NoSlot("loop", "rate limit: no request slot for this merchant now", retry_after=30.0)


@pytest.mark.parametrize("reads_first", [False, True], ids=["acts-first", "reads-first"])
def test_refused_after_its_claim_the_step_releases_it_and_acts_once_later(limited, reads_first):
    # A shop whose Loop processes flagged returns: the step reads Loop's state before processing.
    h = limited(loop_processes_flagged=reads_first)
    loop_id, rid = decided(h)
    h.ctx.loop(h.merchant).limiter = RefusesTheAction(calls_allowed=1 if reads_first else 0)
    h.drain(limit=1)
    ret = h.ret(rid)
    assert ret.state == lc.DECIDED and ret.loop_action_claimed_at is None and ret.loop_call_sent_at is None
    assert loop_actions(h, loop_id) == [] and ret.step_attempts == 0
    assert [(s, t) for s, t, _ in h.delayed] == [("act_in_loop", rid)]  # 30 s: within a sweep's horizon

    h.ctx.loop(h.merchant).limiter = TokenBucket(fakeredis.FakeRedis(), "fresh", 60, burst=4)
    h.queue += [("act_in_loop", rid), ("act_in_loop", rid)]  # its delayed message, and a duplicate
    h.drain()
    assert h.ret(rid).state == lc.LOOP_ACTIONED
    assert [a["action"] for a in loop_actions(h, loop_id)] == ["process"]  # acted once


def run_all_but(h, kept_step: str) -> list[tuple[str, int]]:
    """Run every queued step except `kept_step`'s messages, which are taken off the queue."""
    kept = []
    while h.queue:
        if h.queue[0][0] == kept_step:
            kept.append(h.queue.pop(0))
        else:
            h.drain(limit=1)
    return kept


def test_a_merchants_decisions_are_published_at_its_limits_rate_not_all_at_once(limited):
    """A burst of decisions books the merchant's Loop turns: as many as its bucket lets through
    at once go to the `loop` queue now, the next a second later each (published with that
    delay), and one beyond a sweep waits for its slot in the database. Nothing is taken from
    the bucket before the steps run, and nothing is sent twice."""
    h = limited(per_minute=6000, burst=100)  # reading Loop to take the returns in
    returns = [to_transmitted(h) for _ in range(4)]
    h.ctx.loop(h.merchant).limiter = TokenBucket(h.redis, "loop:burst", 60, burst=2)  # a token a second
    for _, _, ra in returns:
        h.receive(ra, "exact")
    h.poll()
    now_ids = [rid for _, rid in run_all_but(h, "act_in_loop")]
    assert [h.ret(rid).state for _, rid, _ in returns] == [lc.DECIDED] * 4
    assert len(now_ids) == 2 and h.ctx.loop(h.merchant).limiter.try_acquire(2) == 0  # tokens untouched
    assert sorted(round(seconds) for _, _, seconds in h.delayed) == [1, 2]
    assert all(h.ret(rid).waiting_for == lc.Wait.STEP for _, rid, _ in returns)

    # Where the next turn is past the sweep's horizon, the return waits for it as a slot.
    limiter, h.ctx.loop(h.merchant).limiter = h.ctx.loop(h.merchant).limiter, TokenBucket(h.redis, "loop:in", 6000, 100)
    loop_id, rid, ra = to_transmitted(h)
    h.ctx.loop(h.merchant).limiter = limiter
    for _ in range(int(slot_horizon_s(h.ctx))):
        h.ctx.loop(h.merchant).limiter.turn()  # the merchant's earlier decisions
    h.receive(ra, "exact")
    h.poll()
    assert run_all_but(h, "act_in_loop") == []
    ret = h.ret(rid)
    assert ret.state == lc.DECIDED and ret.waiting_for == lc.Wait.SLOT
    assert (as_utc(ret.next_attempt_at) - h.ctx.now()).total_seconds() > slot_horizon_s(h.ctx)

    # The delayed ones, when delivered, act once each.
    h.ctx.loop(h.merchant).limiter = TokenBucket(fakeredis.FakeRedis(), "fresh", 60, burst=4)
    h.queue.extend(("act_in_loop", target) for _, target, _ in h.delayed)
    h.drain()
    for loop_id, rid, _ in returns[2:]:
        assert h.ret(rid).state == lc.LOOP_ACTIONED
        assert [a["action"] for a in loop_actions(h, loop_id)] == ["process"]


def test_another_merchants_turn_is_not_behind_a_burst(limited):
    h = limited(per_minute=60, burst=2)
    for _ in range(50):
        h.ctx.loop(h.merchant).limiter.turn()  # the demo merchant's burst
    other = TokenBucket(h.redis, bucket_name("loop", "another-merchants-key"), 60, burst=2)
    assert other.turn() == 0.0
