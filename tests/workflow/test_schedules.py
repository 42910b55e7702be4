"""Explicit schedules: every open return says what it waits for and when it is next looked at,
and the sweeper acts on that alone (never on updated_at)."""
from datetime import timedelta

from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow.runner import as_utc
from integration.workflow.sweeper import sweep

from .conftest import later
from .test_paths import settle_loop, to_transmitted


def assert_scheduled(ret: Return):
    if ret.state in lc.TERMINAL:
        assert (ret.waiting_for, ret.next_attempt_at) == (None, None), ret.state
    elif ret.state == lc.NEEDS_ATTENTION:
        assert (ret.waiting_for, ret.next_attempt_at) == (lc.Wait.PERSON, None)
    else:
        assert ret.waiting_for in set(lc.Wait) - {lc.Wait.PERSON} and ret.next_attempt_at is not None, \
            (ret.state, ret.waiting_for)


def test_after_every_step_of_a_return_its_schedule_says_what_it_waits_for(harness_for):
    h = harness_for()
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    seen = []
    while h.queue:
        assert_scheduled(h.ret(rid))
        h.drain(limit=1)
        seen.append((h.ret(rid).state, h.ret(rid).waiting_for))
    assert seen[-1] == (lc.TRANSMITTED, lc.Wait.GOODS)
    h.receive(h.ret(rid).rma_number, "exact")
    h.poll()
    assert h.ret(rid).waiting_for == lc.Wait.STEP  # decide sent with its lease
    while h.queue:
        h.drain(limit=1)
        assert_scheduled(h.ret(rid))
    ret = h.ret(rid)
    assert (ret.state, ret.waiting_for) == (lc.LOOP_ACTIONED, lc.Wait.LOOP_OUTCOME)
    settle_loop(h, loop_id)
    h.ingest(loop_id)
    h.drain()
    assert_scheduled(h.ret(rid))
    assert h.ret(rid).state == lc.COMPLETE


def test_a_partial_receipt_waits_for_the_grace_and_the_sweeper_decides_then(harness_for):
    h = harness_for(partial_grace_s=3600)
    _, rid, ra = to_transmitted(h)
    h.receive(ra, "partial")
    h.poll()
    h.drain()
    ret = h.ret(rid)
    assert (ret.state, ret.waiting_for) == (lc.PARTIALLY_RECEIVED, lc.Wait.GOODS)
    assert as_utc(ret.next_attempt_at) == as_utc(ret.first_receipt_at) + timedelta(seconds=3600)
    later(h, (as_utc(ret.next_attempt_at) - h.ctx.now()).total_seconds() - 60)
    assert sweep(h.ctx) == {"events": 0, "steps": 0, "due": 0, "slots": 0, "parked": 0} and h.queue == []
    later(h, 120)
    assert sweep(h.ctx)["due"] == 1 and h.queue == [("decide", rid)]
    h.drain()
    assert h.ret(rid).decision == "flag"  # short at the grace's end


def test_a_return_not_due_is_left_alone_however_old_its_last_update(harness_for):
    h = harness_for()
    _, rid, _ = to_transmitted(h)
    with h.ctx.sessions() as s:
        ret = s.get(Return, rid)
        ret.updated_at -= timedelta(days=60)  # what the old sweeper took for a stall
        s.commit()
    later(h, 24 * 3600)
    assert sweep(h.ctx) == {"events": 0, "steps": 0, "due": 0, "slots": 0, "parked": 0}
    assert h.queue == []


def test_a_lost_step_message_is_sent_again_once_its_lease_ends_and_not_before(harness_for):
    h = harness_for()
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    assert h.queue == [("create_rma", rid)]
    h.queue.clear()  # lost with the broker
    later(h, h.ctx.settings.stuck_after_s - 5)
    assert sweep(h.ctx)["steps"] == 0
    later(h, h.ctx.settings.stuck_after_s + 5)
    assert sweep(h.ctx)["steps"] == 1 and h.queue == [("create_rma", rid)]
    assert h.ret(rid).step_attempts == 1
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.TRANSMITTED and ret.step_attempts == 0  # the step ran: a new count
