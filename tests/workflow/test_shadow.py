"""Shadow mode, step by step against both sandboxes over HTTP (SQLite and PostgreSQL): the whole
workflow runs but nothing reaches Loop; the decision is recorded, a person's action in Loop is
compared with it, and switching the merchant to live acts on new returns only."""
from __future__ import annotations

from dataclasses import replace

import requests

from integration.ops.shadow import agreement_report, shadow_returns
from integration.store.models import Return, utcnow
from integration.workflow import lifecycle as lc
from integration.workflow import steps
from integration.workflow.sweeper import sweep

from .conftest import Harness, later
from .test_paths import settle_loop, to_transmitted

LOOP_ACTIONS = ("process", "flag", "close", "cancel", "remove", "note")


def loop_calls(h: Harness, loop_id: str) -> dict[str, int]:
    """What the Loop sandbox's own ledger says reached it for this return (its API, not /_sim)."""
    counts = requests.get(f"{h.loop_url}/_sim/stats", timeout=5).json()["returns"][loop_id]
    return {k: counts[k] for k in LOOP_ACTIONS if counts.get(k)}


def person_sets(h: Harness, loop_id: str, state: str) -> None:
    """A person acts in Loop's admin; Loop's webhook (or the pull) then tells us."""
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": state},
                  timeout=5).raise_for_status()
    h.ingest(loop_id)
    h.drain()


def received(h: Harness, scenario: str = "exact", **criteria):
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, scenario)
    h.poll()
    h.drain()
    return loop_id, rid, ra


def timeline(h: Harness, rid: int) -> list[tuple[str, str | None]]:
    with h.ctx.sessions() as s:
        return [(t.cause, t.detail) for t in s.get(Return, rid).timeline]


def switch(h: Harness, mode: str) -> None:
    """What a worker does when the merchants table changed: a new merchants dict, no restart."""
    h.ctx = replace(h.ctx, merchants={"demo": replace(h.merchant, mode=mode)}, _loop={}, _rlm={})


def test_a_shadow_merchants_return_is_decided_and_recorded_but_nothing_reaches_loop(harness_for):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h)
    ret = h.ret(rid)
    assert ret.state == lc.SHADOW_DECIDED and ret.decision == "process"
    assert ret.shadow_decided_at is not None and ret.person_action is None
    assert ret.waiting_for == lc.Wait.PERSON_IN_LOOP and ret.next_attempt_at is None
    cause, detail = timeline(h, rid)[-1]
    assert cause == "shadow mode: would process" and detail.startswith("not sent to Loop;")
    assert loop_calls(h, loop_id) == {}
    assert h.loop_record(loop_id)["state"] == "open"
    assert h.rlm_ra(ra)["status"] == "RECEIVED"  # the RMA stays open for the person's action
    # Nothing is due: sweeps and repeated messages of the Loop step change nothing.
    later(h, 7 * 86400)
    assert sweep(h.ctx) == {"events": 0, "steps": 0, "due": 0, "parked": 0, "slots": 0}
    steps.run_step(h.ctx, "act_in_loop", rid)
    assert h.ret(rid).state == lc.SHADOW_DECIDED and loop_calls(h, loop_id) == {}


def test_a_flag_records_the_note_it_would_have_posted(harness_for):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h, "damaged")
    ret = h.ret(rid)
    assert ret.state == lc.SHADOW_DECIDED and ret.decision == "flag"
    cause, detail = timeline(h, rid)[-1]
    assert cause == "shadow mode: would flag" and f"note: {ret.loop_note}" in detail
    assert ret.loop_note.startswith(f"RLM RA {ra}: received damaged")
    assert loop_calls(h, loop_id) == {} and h.loop_record(loop_id)["notes"] == []


def test_a_person_processing_in_loop_agrees_and_the_rma_is_closed_manual(harness_for):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h)
    person_sets(h, loop_id, "closed")
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.person_action == "closed" and ret.person_acted_at
    causes = timeline(h, rid)
    assert ("processed or closed by a person in Loop",
            "shadow mode: agreed (we would process); the RMA will be closed") in causes
    assert h.rlm_ra(ra)["close_reason"] == "MANUAL"
    assert loop_calls(h, loop_id) == {}


def test_a_person_flagging_what_we_would_process_disagrees(harness_for, sessions):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, _ra = received(h)
    person_sets(h, loop_id, "review")
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.person_action == "review"
    assert any(detail and detail.startswith("shadow mode: disagreed (we would process)")
               for _, detail in timeline(h, rid))
    assert loop_calls(h, loop_id) == {}
    with sessions() as s:
        [report] = agreement_report(shadow_returns(s))
    assert (report.decided, report.agreed, report.disagreed, report.waiting) == (1, 0, 1, 0)
    [d] = report.disagreements
    assert (d.loop_return_id, d.would, d.person) == (loop_id, "process", "flagged")


def test_a_person_processing_what_we_would_flag_disagrees_and_the_report_names_our_reasons(
        harness_for, sessions):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h, "damaged")
    person_sets(h, loop_id, "closed")
    with sessions() as s:
        [report] = agreement_report(shadow_returns(s))
    [d] = report.disagreements
    assert d.would == "flag" and d.person == "processed or closed" and d.rules == ["condition"]
    assert any("received damaged" in reason for reason in d.reasons)
    assert d.note == h.ret(rid).loop_note and d.rma_number == ra


def test_a_person_cancelling_after_the_decision_is_recorded_and_parked_for_review(harness_for):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, _ra = received(h)
    person_sets(h, loop_id, "cancelled")
    ret = h.ret(rid)
    assert ret.state == lc.NEEDS_ATTENTION and ret.person_action == "cancelled"
    assert "shadow mode: disagreed" in ret.attention_reason
    assert loop_calls(h, loop_id) == {}


def test_a_processing_failure_of_the_persons_call_never_parks_at_the_loop_step(harness_for):
    h = harness_for({"mode": "shadow"})
    loop_id, rid, _ra = received(h)
    from integration.workflow.events import _processing_failed

    _processing_failed(h.ctx, h.merchant, {"loop_return_id": loop_id, "message": "card declined",
                                           "source": "admin"})
    ret = h.ret(rid)
    assert ret.state == lc.SHADOW_DECIDED and ret.attention_step is None
    assert timeline(h, rid)[-1][0] == "return.processing.failed"


def test_report_counts_decided_agreed_disagreed_and_waiting_per_merchant(harness_for, sessions):
    h = harness_for({"mode": "shadow"})
    agreed, _, _ = received(h)
    disagreed, _, _ = received(h, "damaged")
    waiting, _, _ = received(h)
    person_sets(h, agreed, "closed")
    person_sets(h, disagreed, "closed")
    with sessions() as s:
        [report] = agreement_report(shadow_returns(s, merchant="demo"))
        assert agreement_report(shadow_returns(s, merchant="other")) == []
    assert report.merchant == "demo"
    assert (report.decided, report.agreed, report.disagreed, report.waiting) == (3, 1, 1, 1)
    assert [d.loop_return_id for d in report.disagreements] == [disagreed]
    assert loop_calls(h, waiting) == {}


def test_switching_to_live_acts_on_new_returns_never_on_earlier_shadow_ones(harness_for):
    h = harness_for({"mode": "shadow"})
    shadowed, shadow_rid, _ = received(h)
    switch(h, "live")
    # The earlier return stays a shadow decision, whatever runs for it now.
    later(h, 7 * 86400)
    sweep(h.ctx)
    h.drain()
    steps.run_step(h.ctx, "act_in_loop", shadow_rid)
    assert h.ret(shadow_rid).state == lc.SHADOW_DECIDED and loop_calls(h, shadowed) == {}
    h.ctx.now = utcnow  # back to the real clock for the live return
    live, live_rid, ra = received(h)
    assert loop_calls(h, live) == {"process": 1}
    assert h.ret(live_rid).shadow_decided_at is None
    settle_loop(h, live)
    h.ingest(live)
    h.drain()
    assert h.ret(live_rid).state == lc.COMPLETE and h.rlm_ra(ra)["close_reason"] == "LOOP_PROCESSED"
    # The person then processes the shadow one: compared, and still nothing of ours in Loop.
    person_sets(h, shadowed, "closed")
    assert h.ret(shadow_rid).state == lc.COMPLETE and loop_calls(h, shadowed) == {}


def test_a_return_decided_live_but_not_yet_sent_is_not_sent_after_a_switch_to_shadow(harness_for):
    h = harness_for()
    loop_id, rid, ra = to_transmitted(h)
    h.receive(ra, "exact")
    h.poll()
    assert h.queue == [("decide", rid)]
    steps.run_step(h.ctx, *h.queue.pop())  # decided live; its Loop step still queued
    assert h.ret(rid).state == lc.DECIDED and h.queue == [("act_in_loop", rid)]
    switch(h, "shadow")
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.SHADOW_DECIDED and ret.shadow_decided_at is not None
    assert loop_calls(h, loop_id) == {}


def test_a_live_merchant_is_unchanged(harness_for):
    h = harness_for()
    assert h.merchant.mode == "live"
    loop_id, rid, _ra = received(h)
    assert loop_calls(h, loop_id) == {"process": 1}
    ret = h.ret(rid)
    assert ret.state == lc.LOOP_ACTIONED and ret.shadow_decided_at is None


def test_switching_a_stored_merchant_to_live_takes_effect_without_a_restart(harness_for, sandboxes,
                                                                            database_url, monkeypatch):
    """The merchants table changed by `merchants update`, re-read within MERCHANTS_REFRESH_S, as a
    worker does (workers/tasks.context): no restart, and the shadow decision stays one."""
    from cryptography.fernet import Fernet, MultiFernet

    from integration.merchants import demo_merchant_config
    from integration.store import merchant_store

    for name in ("MERCHANTS_FILE", "MERCHANTS_TOML"):
        monkeypatch.delenv(name, raising=False)
    keys = MultiFernet([Fernet(Fernet.generate_key())])
    h = harness_for()
    config = {**demo_merchant_config(), "loop_base_url": sandboxes["loop"].url,
              "rlm_base_url": sandboxes["rlm"].url, "mode": "shadow"}
    with h.ctx.sessions() as s:
        merchant_store.save(s, config, keys)
    clock = [0.0]
    merchants = merchant_store.Refreshing(lambda: merchant_store.signature(database_url),
                                          lambda: merchant_store.in_effect(database_url, keys),
                                          refresh_s=5, clock=lambda: clock[0])
    h.ctx = replace(h.ctx, merchants=merchants.get())
    assert h.merchant.mode == "shadow"
    shadowed, shadow_rid, _ = received(h)
    assert h.ret(shadow_rid).state == lc.SHADOW_DECIDED
    with h.ctx.sessions() as s:
        assert merchant_store.update(s, "demo", {"mode": "live"}, keys) == "updated"
    clock[0] = 6.0
    h.ctx = replace(h.ctx, merchants=merchants.get(), _loop={}, _rlm={})
    assert h.merchant.mode == "live"
    live, _live_rid, _ = received(h)
    assert loop_calls(h, live) == {"process": 1} and loop_calls(h, shadowed) == {}
    assert h.ret(shadow_rid).state == lc.SHADOW_DECIDED


def test_the_persons_action_arrives_as_a_webhook_through_the_receiver(harness_for, post_webhook, enqueued):
    """Loop's `return.updated` after a person flagged: stored by the receiver, handled by the
    worker's handle_event, which re-reads Loop (a shadow-decided return's course depends on it)."""
    from integration.workflow import events

    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h)
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "review"},
                  timeout=5).raise_for_status()
    answer = post_webhook({"topic": "return", "trigger": "return.updated", "id": loop_id,
                           "state": "review", "created_at": "2026-11-01T10:00:00Z"})
    assert answer.status_code == 202
    events.handle_event(h.ctx, enqueued.pop())
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.person_action == "review"
    assert ("flagged by a person in Loop",
            "shadow mode: disagreed (we would process); the RMA will be closed") in timeline(h, rid)
    assert h.rlm_ra(ra)["close_reason"] == "MANUAL" and loop_calls(h, loop_id) == {}


def test_the_loop_returns_pull_finds_a_persons_action_whose_webhook_never_came(harness_for):
    from integration.workflow.reconcile import reconcile_loop

    h = harness_for({"mode": "shadow"})
    loop_id, rid, ra = received(h)
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": "closed"},
                  timeout=5).raise_for_status()
    assert reconcile_loop(h.ctx, "demo") >= 1
    h.drain()
    ret = h.ret(rid)
    assert ret.state == lc.COMPLETE and ret.person_action == "closed"
    assert h.rlm_ra(ra)["close_reason"] == "MANUAL" and loop_calls(h, loop_id) == {}
