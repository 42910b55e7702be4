"""One Loop process call per return, and nothing stuck, where real Loop is unkind: answers lost
after Loop applied the call, a processing queue slower than the settle time, repeated
processing failures whose webhooks are byte-for-byte the same, lost decide messages, long
refusal messages on PostgreSQL, and two merchants on one RLM company."""
from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import pytest
import requests

from integration.merchants import Criteria, demo_merchant_config, parse_merchants
from integration.ops.actions import retry_return
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow import events, loop_action, receiving, runner, steps
from integration.workflow.context import Context
from integration.workflow.sweeper import sweep
from sandbox.common import ServerThread
from sandbox.loop import create_app as loop_app
from tests.conftest import wire

from .conftest import Harness, later
from .test_paths import to_transmitted

PROCESS = {"method": "POST", "path": "/warehouse/return/*/process"}


def accepted(h: Harness, loop_id: str, action: str = "process") -> int:
    """Calls of `action` Loop accepted for the return: Loop's own ledger, not our database."""
    return sum(1 for a in h.loop_record(loop_id)["actions"] if a["ok"] and a["action"] == action)


def loop_config(h: Harness, **settings) -> None:
    requests.post(f"{h.loop_url}/_sim/config", json=settings, timeout=5).raise_for_status()


def loop_fault(h: Harness, rule: dict) -> None:
    requests.post(f"{h.loop_url}/_sim/faults", json=rule, timeout=5).raise_for_status()


def decided(h: Harness, scenario: str = "exact") -> tuple[str, int]:
    """A return decided, its Loop action not yet run."""
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, scenario)
    h.poll()
    while h.queue and h.queue[0][0] != "act_in_loop":
        h.drain(limit=1)
    assert h.ret(rid).state == lc.DECIDED
    return loop_id, rid


def clock_from(h: Harness):
    """at(seconds): set the service's clock to `seconds` after now (not cumulative)."""
    start = h.ctx.now()

    def at(seconds: float) -> None:
        h.ctx.now = lambda: start + timedelta(seconds=seconds)

    return at


def causes(h: Harness, rid: int) -> list[str]:
    """The return's timeline, cause by cause."""
    with h.ctx.sessions() as s:
        return [t.cause for t in s.get(Return, rid).timeline]


def run(h: Harness, step: str, rid: int) -> None:
    """One delivery of a step's message, as a Celery worker runs it (a retry is swallowed)."""
    h.queue.append((step, rid))
    h.drain(limit=1)


def sweep_and_drain(h: Harness) -> dict:
    counts = sweep(h.ctx)
    h.drain()
    return counts


def test_a_process_call_applied_but_its_answer_lost_is_never_sent_again(harness_for):
    """Defect: Loop applied `process`, the answer was lost, Loop took longer than the settle
    time; the retry saw the return still open and processed it a second time."""
    h = harness_for()
    loop_config(h, process_delay_s=3600)  # Loop's queue is slow: open for the whole test
    loop_id, rid = decided(h)
    loop_fault(h, {"match": PROCESS, "after": True, "drop": True, "times": 1})
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 1
    # Every way the step can come round again: a redelivered message, the task's retry long
    # after the settle time, the sweeper's scheduled checks while Loop still shows it open.
    at = clock_from(h)
    for minutes in (2, 5, 20, 60, 180):
        at(minutes * 60)
        run(h, "act_in_loop", rid)
        sweep_and_drain(h)
    assert accepted(h, loop_id) == 1  # Loop's ledger: one process call, one refund
    ret = h.ret(rid)
    assert ret.state == lc.LOOP_ACTIONED and ret.waiting_for == lc.Wait.LOOP_OUTCOME
    assert any("answer lost" in c for c in causes(h, rid))
    # Loop finishes at last; its webhook (or the next check) closes the RMA.
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "closed"}, timeout=5)
    h.ingest(loop_id)
    h.drain()
    assert h.ret(rid).state == lc.COMPLETE and accepted(h, loop_id) == 1


def test_a_worker_killed_after_the_process_request_left_never_sends_it_again(harness_for):
    """The claim was written (with it, that the call is being sent), then the worker died: the
    call may be queued in Loop, so the step waits for the outcome instead of sending it again."""
    h = harness_for()
    loop_id, rid = decided(h)
    assert loop_action._claim(h.ctx, rid) is not None
    h.queue.clear()
    later(h, 3600)  # long past the settle time: an old claim, as after a SIGKILL
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 0  # (here the request never reached Loop, but we cannot know)
    ret = h.ret(rid)
    assert ret.state == lc.LOOP_ACTIONED and ret.waiting_for == lc.Wait.LOOP_OUTCOME


def test_a_claim_without_its_send_marker_is_sent_after_the_settle_time(harness_for):
    """A claim with nothing marked sent (written by a release that claimed first and marked the
    send in a second write, its worker killed in between): nothing left, safe to send."""
    h = harness_for()
    loop_id, rid = decided(h)
    with h.ctx.sessions.begin() as s:
        s.get(Return, rid).loop_action_claimed_at = h.ctx.now()
    h.queue.clear()
    later(h, loop_action.settle_s(h.ctx) + 1)
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 1


def test_outcome_checks_start_at_the_settle_time_then_double_up_to_the_cap(harness_for):
    h = harness_for()
    h.ctx.settings = replace(h.ctx.settings, loop_settle_s=60.0)
    settle, cap = 60.0, h.ctx.settings.loop_outcome_check_max_s
    sent = h.ctx.now()
    gaps = []
    now = sent
    for _ in range(12):
        nxt = loop_action.outcome_checks(h.ctx, sent, now)
        gaps.append((nxt - now).total_seconds())
        now = nxt
    assert gaps[0] == settle and gaps[1] == settle and gaps[2] == 2 * settle
    assert all(b >= a for a, b in itertools.pairwise(gaps)) and max(gaps) == cap


def test_no_outcome_within_the_window_parks_at_the_loop_step_and_retry_sends_once_more(harness_for):
    h = harness_for()
    loop_config(h, process_delay_s=86400)  # the call is queued in Loop but never finishes
    loop_id, rid = decided(h)
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 1
    window = h.ctx.settings.loop_outcome_window_s
    reads_before = _details_reads(h)
    at = clock_from(h)
    for elapsed in range(0, int(window), 600):  # the beat's sweeps, every ten minutes
        at(elapsed)
        sweep_and_drain(h)
    reads = _details_reads(h) - reads_before
    assert 5 <= reads <= 25, reads  # growing gaps: a handful of reads in six hours, not 36
    assert h.ret(rid).state == lc.LOOP_ACTIONED
    at(window + 1)
    sweep_and_drain(h)
    ret = h.ret(rid)
    assert ret.state == lc.NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
    assert "outcome of the process call unknown" in ret.attention_reason
    assert accepted(h, loop_id) == 1
    # The operator looked in Loop and confirms: send it again.
    assert retry_return(h.ctx, "demo", loop_id, operator="test").step == "act_in_loop"
    h.drain()
    assert accepted(h, loop_id) == 2
    assert h.ret(rid).state == lc.LOOP_ACTIONED


def test_a_return_parked_for_an_unknown_outcome_moves_on_when_loop_shows_it_processed(harness_for):
    h = harness_for()
    loop_config(h, process_delay_s=86400)
    loop_id, rid = decided(h)
    run(h, "act_in_loop", rid)
    later(h, h.ctx.settings.loop_outcome_window_s + 1)
    sweep_and_drain(h)
    assert h.ret(rid).state == lc.NEEDS_ATTENTION
    # Loop's queue finally ran the call: `return.closed` arrives, nobody needs to do anything.
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "closed"}, timeout=5)
    h.ingest(loop_id)
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.attention_reason is None
    assert h.rlm_ra(ret.rma_number)["close_reason"] == "LOOP_PROCESSED"
    assert accepted(h, loop_id) == 1


def _details_reads(h: Harness) -> int:
    stats = requests.get(f"{h.loop_url}/_sim/stats", timeout=5).json()
    return sum(n for route, n in stats["api_requests"]["by_route"].items() if "details" in route)


def processing_failed_body(loop_id: str) -> bytes:
    return wire({"topic": "return.processing", "trigger": "return.processing.failed",
                 "return_id": int(loop_id), "return_state": "open",
                 "message": "Return failed to process", "source": "api"})


def test_a_second_processing_failure_identical_to_the_first_is_not_dropped(harness_for, post_webhook,
                                                                           enqueued):
    """Defect: the second failure's webhook (after an operator retry) was answered `200
    duplicate delivery` and dropped; the return sat in loop_actioned."""
    h = harness_for()
    loop_config(h, processing_fails=True, process_delay_s=0.0)
    loop_id, rid = decided(h)
    body = processing_failed_body(loop_id)
    for attempt in (1, 2):
        run(h, "act_in_loop", rid)
        assert accepted(h, loop_id) == attempt
        assert h.ret(rid).state == lc.LOOP_ACTIONED
        answer = post_webhook(None, raw=body)
        assert answer.status_code == 202, answer.get_json()
        events.handle_event(h.ctx, enqueued.pop())
        ret = h.ret(rid)
        assert ret.state == lc.NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
        assert "Loop could not process the return" in ret.attention_reason
        retry_return(h.ctx, "demo", loop_id, operator="test")
        h.queue.clear()
        later(h, attempt * 3600)
    # Loop re-delivering a failure we already parked for only notes it on the timeline.
    assert post_webhook(None, raw=body).status_code == 202


def test_a_lost_decide_after_the_last_parcel_is_decided_when_its_lease_ends(harness_for):
    """Defect: only `transmitted` returns with receipts were re-driven; a partially received
    return whose last parcel's decide message was lost waited the whole grace period. Now the
    stored receipt gives the return a lease; when it ends the sweeper sends decide again."""
    h = harness_for(partial_grace_s=72 * 3600)
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "partial")
    h.poll()
    h.drain()
    assert h.ret(rid).state == lc.PARTIALLY_RECEIVED
    h.receive(ra, "remainder")
    h.poll()
    assert h.queue == [("decide", rid)]
    h.queue.clear()  # the decide message is lost with a killed worker
    assert sweep(h.ctx)["steps"] == 0  # not yet: just stored, its message may still be queued
    later(h, h.ctx.settings.sweep_interval_s + 1)
    assert sweep(h.ctx)["steps"] == 0  # nor while its lease runs
    later(h, h.ctx.settings.stuck_after_s + 1)  # the lease is over: lost, sent again
    sweep_and_drain(h)
    ret = h.ret(rid)
    assert ret.decision == "process" and ret.state == lc.LOOP_ACTIONED
    assert accepted(h, loop_id) == 1
    # Nothing newer since: the following sweeps leave it alone.
    later(h, 120)
    assert sweep(h.ctx)["steps"] == 0


def test_a_refusal_message_longer_than_its_column_is_kept_cut_not_fatal(harness_for, monkeypatch):
    """Defect (PostgreSQL): `Loop refused process (<message>)` went into a 64-character
    column and the step died with StringDataRightTruncation; SQLite never noticed."""
    h = harness_for()
    loop_id, rid = decided(h)
    claim = loop_action._claim

    def claim_then_a_person_cancels(ctx, return_id, expected=None):
        got = claim(ctx, return_id, expected)
        requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "cancelled"},
                      timeout=5).raise_for_status()
        return got

    monkeypatch.setattr(loop_action, "_claim", claim_then_a_person_cancels)
    run(h, "act_in_loop", rid)
    ret = h.ret(rid)
    # Loop answered {"message": "Return is cancelled and therefore cannot be processed."}.
    written = causes(h, rid)
    assert any(c.startswith("Loop refused process (Return is cancelled") for c in written), written
    assert all(len(c) <= 64 for c in written)
    assert ret.state == lc.NEEDS_ATTENTION and "cancelled after goods were received" in ret.attention_reason
    assert accepted(h, loop_id) == 0


@pytest.fixture
def second_shop():
    """Another merchant's Loop account: its return ids start where the first shop's do."""
    app = loop_app({"process_delay_s": 0.05})
    server = ServerThread(app).start()
    yield server
    app.extensions["loop_sandbox"].shutdown()
    server.stop()


def test_two_merchants_on_one_rlm_company_never_share_an_ra(harness_for, second_shop):
    """Defect: the RA's idempotency key was the Loop return id alone, so a second merchant's
    return with the same Loop id attached to the first merchant's RA."""
    h = harness_for()
    config = demo_merchant_config()
    config.update(name="other-shop", loop_base_url=second_shop.url, rlm_base_url=h.rlm_url)
    other = replace(parse_merchants([config])["other-shop"], criteria=Criteria())
    merchants = {**h.ctx.merchants, "other-shop": other}
    queue: list = []
    ctx_b = Context(settings=h.ctx.settings, merchants=merchants, sessions=h.ctx.sessions,
                    enqueue=lambda step, target: queue.append((step, target)))
    h.ctx.merchants = merchants

    loop_a = h.new_return()
    b = Harness(ctx_b, second_shop.url, h.rlm_url, queue)
    loop_b = b.new_return()
    assert loop_a == loop_b  # two shops, one Loop id
    rid_a = h.ingest(loop_a)
    h.drain()
    rid_b = events.ingest_return(ctx_b, other, ctx_b.loop(other).get_return(loop_b), cause="test")
    b.drain()
    ret_a, ret_b = h.ret(rid_a), h.ret(rid_b)
    assert ret_a.rma_number != ret_b.rma_number
    assert [c for c in causes(h, rid_b) if "RMA" in c] == ["RMA created in RLM", "RMA transmitted in RLM"]
    refs = requests.get(f"{h.rlm_url}/_sim/stats", timeout=5).json()["ras_per_external_ref"]["90"]
    assert refs == {f"demo:{loop_a}": 1, f"other-shop:{loop_b}": 1}


def test_every_text_column_is_cut_to_fit_on_every_database(sessions):
    with sessions() as s:
        ret = Return(merchant="m" * 300, loop_return_id="1" * 100, state=lc.RECEIVED,
                     order_name="#" * 500, currency="EURO-DOLLAR", total="1" * 100, units=[])
        s.add(ret)
        lc.note(ret, "c" * 1000, "detail is Text: kept whole " + "d" * 5000)
        s.commit()
        s.expunge_all()
        got = s.get(Return, ret.id)
        assert (len(got.merchant), len(got.loop_return_id), len(got.order_name)) == (64, 32, 64)
        assert len(got.timeline[0].cause) == 64 and len(got.timeline[0].detail) > 5000
