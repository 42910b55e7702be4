"""Merchant options and side paths, step by step against the sandboxes."""
import time

import requests

from integration.workflow import lifecycle as lc
from integration.workflow.sweeper import sweep

from .conftest import later


def settle_loop(h, loop_id, state="closed", timeout=5.0):
    deadline = time.monotonic() + timeout
    while h.loop_record(loop_id)["state"] != state:
        assert time.monotonic() < deadline, f"Loop never reached {state}"
        time.sleep(0.05)


def to_transmitted(h, **body):
    loop_id = h.new_return(**body)
    rid = h.ingest(loop_id)
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.TRANSMITTED, ret.state
    return loop_id, rid, ret.rma_number


def test_exact_receipt_is_processed_and_the_rma_closed_once_loop_confirms(harness_for):
    h = harness_for()
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "exact")
    h.poll()
    h.drain()
    assert h.ret(rid).state == lc.LOOP_ACTIONED  # waits for Loop to finish processing
    assert h.loop_record(loop_id)["process_data"] == {"rlm_ra_number": str(ra)}
    settle_loop(h, loop_id)
    h.ingest(loop_id)  # Loop's return.closed webhook
    h.drain()
    assert h.ret(rid).state == lc.COMPLETE
    assert h.rlm_ra(ra)["close_reason"] == "LOOP_PROCESSED"


def test_missing_units_removed_and_rest_processed_when_the_merchant_chooses_it(harness_for):
    h = harness_for(on_missing="remove_and_process", partial_grace_s=0)
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "partial")  # one unit of the two-unit line never arrives
    h.poll()
    h.drain()
    ret = h.ret(rid)
    assert ret.decision == "remove_and_process"
    removed = [li["line_item_id"] for li in h.loop_record(loop_id)["removed_line_items"]]
    assert removed and [str(x) for x in removed] == ret.decision_detail["remove_line_item_ids"]
    settle_loop(h, loop_id)
    h.ingest(loop_id)
    h.drain()
    assert h.ret(rid).state == lc.COMPLETE


def test_partial_receipt_waits_for_the_grace_period_then_flags_with_a_note(harness_for):
    h = harness_for(partial_grace_s=3600)
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "partial")
    h.poll()
    h.drain()
    assert h.ret(rid).state == lc.PARTIALLY_RECEIVED
    assert sweep(h.ctx)["due"] == 0
    later(h, 3601)
    assert sweep(h.ctx)["due"] == 1
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.decision == "flag"
    notes = [n["content"] for n in h.loop_record(loop_id)["notes"]]
    assert notes == [ret.loop_note] and ret.loop_note.startswith(f"RLM RA {ra}: missing 1 x CB11D10-")
    assert h.loop_record(loop_id)["state"] == "review"
    assert h.rlm_ra(ra)["close_reason"] == "LOOP_FLAG_RESOLVED"


def test_nothing_received_by_expiry_closes_in_loop_when_configured(harness_for):
    h = harness_for(expiry_days=1, on_expiry="close")
    loop_id, rid, ra = to_transmitted(h)
    later(h, 86400 + 1)
    assert sweep(h.ctx)["due"] == 1
    h.drain()
    assert h.ret(rid).state == lc.COMPLETE
    assert h.loop_record(loop_id)["state"] == "closed"
    assert h.rlm_ra(ra)["close_reason"] == "EXPIRED"


def test_return_worth_more_than_the_threshold_is_flagged(harness_for):
    from decimal import Decimal

    h = harness_for(value_threshold=Decimal("100"))
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "exact")
    h.poll()
    h.drain()
    ret = h.ret(rid)
    assert ret.decision == "flag" and "above 100.00" in ret.loop_note


def test_rlm_that_transmits_by_itself_needs_no_transmit_call(harness_for, sandboxes):
    requests.post(f"{sandboxes['rlm'].url}/_sim/config", json={"auto_transmit_on_create": True}, timeout=5)
    h = harness_for({"rlm_auto_transmit": True})
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    ran = h.drain()
    assert h.ret(rid).state == lc.TRANSMITTED and "transmit_rma" not in ran


def test_rlm_validation_message_reaches_the_reason_verbatim(harness_for, sandboxes):
    faults = f"{sandboxes['rlm'].url}/_sim/faults"
    requests.post(faults, json={"match": {"method": "POST", "path": "/return-authorizations"},
                                "status": 422, "code0": "Invalid Size on Line 2", "times": 1}, timeout=5)
    h = harness_for()
    rid = h.ingest(h.new_return())
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.NEEDS_ATTENTION
    assert "Invalid Size on Line 2" in ret.attention_reason
    assert ret.attention_step == "create_rma"


def test_cancelled_in_loop_before_the_rma_exists_creates_none(harness_for):
    h = harness_for()
    loop_id = h.new_return()
    rid = h.ingest(loop_id)  # create_rma is queued but has not run yet
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "cancelled"}, timeout=5)
    h.ingest(loop_id)
    h.drain()
    assert h.ret(rid).state == lc.CANCELLED
    stats = requests.get(f"{h.rlm_url}/_sim/stats", timeout=5).json()
    assert stats["ras_per_external_ref"].get("90", {}) == {}


def test_a_step_run_twice_does_nothing_the_second_time(harness_for):
    h = harness_for()
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "damaged")
    h.poll()
    h.queue.append(("decide", rid))
    h.queue.append(("decide", rid))
    h.drain()
    h.queue.append(("act_in_loop", rid))  # a redelivered message after the action
    h.drain()
    record = h.loop_record(loop_id)
    assert [a["action"] for a in record["actions"] if a["ok"]] == ["flag", "note"]
    assert len(record["notes"]) == 1


def decided(h, scenario="exact"):
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, scenario)
    h.poll()
    h.queue.clear()
    from integration.workflow import events, loop_action, receiving, runner, steps

    receiving.decide(h.ctx, rid)
    h.queue.clear()
    assert h.ret(rid).state == lc.DECIDED
    return loop_id, rid


def test_a_429_on_the_process_call_releases_the_claim_and_the_retry_processes_once(harness_for):
    from integration.errors import NotSent
    from integration.workflow import events, loop_action, receiving, runner, steps

    h = harness_for()
    loop_id, rid = decided(h)
    faults = f"{h.loop_url}/_sim/faults"
    requests.post(faults, json={"match": {"method": "POST", "path": "/warehouse/return/*/process"},
                                "status": 429, "times": 1}, timeout=5).raise_for_status()
    try:
        loop_action.act_in_loop(h.ctx, rid)
        raise AssertionError("the 429 should reach the task as a retry")
    except NotSent:
        pass
    ret = h.ret(rid)  # nothing happened in Loop: neither claimed nor marked sent
    assert ret.loop_action_claimed_at is None and ret.loop_call_sent_at is None
    loop_action.act_in_loop(h.ctx, rid)
    assert [a["action"] for a in h.loop_record(loop_id)["actions"] if a["ok"]] == ["process"]


def test_after_an_unclear_call_only_one_worker_may_send_it_again(harness_for):
    """Two workers (a Celery retry and a sweeper re-drive) find the same stale claim."""
    from datetime import timedelta

    from integration.workflow import events, loop_action, receiving, runner, steps

    h = harness_for()
    loop_id, rid = decided(h)
    stale = h.ctx.now() - timedelta(hours=1)
    with h.ctx.sessions() as s:  # as if the earlier attempt died an hour ago, nothing sent
        from integration.store.models import Return

        s.get(Return, rid).loop_action_claimed_at = stale
        s.commit()
    first = loop_action._claim(h.ctx, rid, expected=stale)
    second = loop_action._claim(h.ctx, rid, expected=stale)
    assert first is not None and second is None
    # The worker that lost the race, arriving now, waits instead of sending it again.
    try:
        loop_action.act_in_loop(h.ctx, rid)
        raise AssertionError("expected a wait")
    except loop_action.RetryableError as exc:
        assert "earlier call" in exc.message
    assert [a["action"] for a in h.loop_record(loop_id)["actions"] if a["ok"]] == []


def test_received_conditions_go_to_loops_grading_when_the_merchant_wants_them(harness_for):
    h = harness_for(grade_in_loop=True)
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "damaged")
    h.poll()
    h.drain()
    from integration.store.models import Return

    with h.ctx.sessions() as s:
        ret = s.get(Return, rid)
        assert ret.decision == "flag"
        graded = [t.detail for t in ret.timeline if t.cause == "conditions sent to Loop's grading"]
    assert graded == ["3 unit(s) graded"]


def _decided_and_waiting_for_loop(h):
    """A return decided whose Loop action message never runs (lost, or queued behind others)."""
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "exact")
    h.poll()
    while h.queue and h.queue[0][0] != "act_in_loop":
        h.drain(limit=1)
    assert h.ret(rid).state == lc.DECIDED
    h.queue.clear()
    return rid


def test_a_decided_return_whose_action_keeps_vanishing_is_re_driven_then_parked(harness_for):
    h = harness_for()
    rid = _decided_and_waiting_for_loop(h)
    limit = h.ctx.settings.max_event_attempts
    stuck = h.ctx.settings.stuck_after_s
    for n in range(1, limit + 1):
        later(h, n * (stuck + 1))
        assert sweep(h.ctx)["steps"] == 1
        assert h.queue == [("act_in_loop", rid)]
        h.queue.clear()  # lost again
    later(h, (limit + 1) * (stuck + 1))
    assert sweep(h.ctx)["parked"] == 1
    ret = h.ret(rid)
    assert ret.state == lc.NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
    assert f"did not complete after {limit} attempts" in ret.attention_reason


def test_a_decided_return_waiting_its_turn_behind_loops_rate_limit_is_left_alone(harness_for):
    h = harness_for()
    rid = _decided_and_waiting_for_loop(h)
    settings = h.ctx.settings
    # More actions queued than Loop lets through in STUCK_AFTER_S (two calls each).
    h.ctx.loop_backlog = lambda: int(settings.loop_requests_per_minute * settings.stuck_after_s / 60)
    for n in range(1, settings.max_event_attempts + 3):
        later(h, n * (settings.stuck_after_s + 1))
        assert sweep(h.ctx) == {"events": 0, "steps": 0, "due": 0, "slots": 0, "parked": 0}
    assert h.ret(rid).state == lc.DECIDED and h.queue == []
    h.ctx.loop_backlog = lambda: 3  # the queue drained without reaching it: it was lost after all
    later(h, (settings.max_event_attempts + 3) * (settings.stuck_after_s + 1))
    assert sweep(h.ctx)["steps"] == 1 and h.queue == [("act_in_loop", rid)]


# --- the shopper's address: kept only while the return is `received` -------------------------
def test_a_return_parked_before_its_rma_keeps_no_address_and_its_retry_reads_it_from_loop(harness_for, sandboxes):
    from integration.ops.actions import retry_return

    requests.post(f"{sandboxes['rlm'].url}/_sim/faults", timeout=5, json={
        "match": {"method": "POST", "path": "/return-authorizations"}, "status": 422,
        "code0": "Invalid Size on Line 2", "times": 1})
    h = harness_for()
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    assert h.ret(rid).ship_from["name"] == "Pat"
    h.drain()
    parked = h.ret(rid)
    assert (parked.state, parked.attention_step) == (lc.NEEDS_ATTENTION, "create_rma")
    assert parked.ship_from is None  # parked: the address is not kept while a person looks

    assert retry_return(h.ctx, "demo", loop_id, operator="test").step == "create_rma"
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.TRANSMITTED and ret.ship_from is None
    ra = h.rlm_ra(ret.rma_number)
    assert ra["ship_from"]["name"] == "Pat" and ra["ship_from"]["state"] == "TX"  # read from Loop again


def test_a_return_cancelled_before_its_rma_keeps_no_address(harness_for):
    h = harness_for()
    loop_id = h.new_return()
    rid = h.ingest(loop_id)
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "cancelled"}, timeout=5)
    h.ingest(loop_id)
    assert h.ret(rid).ship_from is None  # cancelling
    h.drain()
    assert (h.ret(rid).state, h.ret(rid).ship_from) == (lc.CANCELLED, None)
