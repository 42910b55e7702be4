"""One Loop call per processed return: the action is sent without reading the return first, and
Loop is read only when it refuses (a person acted since we last heard) or the answer is lost.
Loop's own ledger and request counts are the evidence, not our database."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import requests

from integration.merchants import demo_merchant_config, parse_merchants
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow import rules
from integration.workflow.loop_action import acts_first

from .test_one_refund import accepted, causes, decided, loop_config, loop_fault, run

DETAILS = "GET /warehouse/return/<id>/details"


def loop_requests(h) -> Counter:
    stats = requests.get(f"{h.loop_url}/_sim/stats", timeout=5).json()
    return Counter(stats["api_requests"]["by_route"])


def person_sets_state(h, loop_id: str, state: str) -> None:
    """A person acts in Loop's admin; its webhook has not reached us yet."""
    requests.post(f"{h.loop_url}/_sim/returns/{loop_id}/state", json={"state": state},
                  timeout=5).raise_for_status()


def test_a_processed_return_costs_one_loop_call(harness_for):
    h = harness_for()
    loop_id, rid = decided(h)
    before = loop_requests(h)
    run(h, "act_in_loop", rid)
    made = loop_requests(h) - before
    assert sum(made.values()) == 1 and accepted(h, loop_id) == 1, made
    assert h.ret(rid).state == lc.LOOP_ACTIONED


def test_a_flagged_return_costs_the_flag_and_its_note_nothing_read(harness_for):
    h = harness_for(accepted_conditions=["GOOD"])
    loop_id, rid = decided(h, "damaged")
    assert h.ret(rid).decision == rules.FLAG
    before = loop_requests(h)
    run(h, "act_in_loop", rid)
    made = loop_requests(h) - before
    assert sum(made.values()) == 2 and DETAILS not in made, made
    assert accepted(h, loop_id, "flag") == 1 and len(h.loop_record(loop_id)["notes"]) == 1


@pytest.mark.parametrize("state, verb", [("review", "flagged"), ("closed", "processed or closed")])
def test_a_person_acting_since_our_last_news_is_told_by_loops_refusal(harness_for, state, verb):
    h = harness_for()
    loop_id, rid = decided(h)
    person_sets_state(h, loop_id, state)
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 0  # Loop refused our call; nothing processed by us
    ret = h.ret(rid)
    assert ret.state == lc.LOOP_ACTIONED and ret.decision == "by_person"
    assert ret.loop_action_claimed_at is None
    assert any(c.startswith("Loop refused process") for c in causes(h, rid))
    assert any(c == f"{verb} by a person in Loop" for c in causes(h, rid))


def test_a_shop_whose_loop_processes_flagged_returns_reads_first_and_never_processes_one(harness_for):
    h = harness_for({"loop_processes_flagged": True})
    loop_config(h, allow_flagged_process=True)
    loop_id, rid = decided(h)
    person_sets_state(h, loop_id, "review")
    run(h, "act_in_loop", rid)
    assert accepted(h, loop_id) == 0
    assert h.ret(rid).decision == "by_person"
    assert any(c == "Loop state re-read before acting" for c in causes(h, rid))


def test_an_answer_lost_after_loop_queued_the_call_is_never_sent_again(harness_for):
    h = harness_for()
    loop_config(h, process_delay_s=3600)
    loop_id, rid = decided(h)
    loop_fault(h, {"match": {"method": "POST", "path": "/warehouse/return/*/process"},
                   "after": True, "drop": True, "times": 1})
    run(h, "act_in_loop", rid)
    run(h, "act_in_loop", rid)  # a redelivered message
    assert accepted(h, loop_id) == 1
    ret = h.ret(rid)
    assert ret.state == lc.LOOP_ACTIONED and ret.waiting_for == lc.Wait.LOOP_OUTCOME


def _snap(decision: str, **fields) -> Return:
    return Return(**{"merchant": "demo", "loop_return_id": "1", "decision": decision, "loop_state": "open",
                     **fields})


def test_which_calls_are_sent_without_reading_first():
    merchant = parse_merchants([demo_merchant_config()])["demo"]
    # Loop refuses these on any return that is not open: a refusal tells us what happened.
    for action in (rules.PROCESS, rules.REMOVE_AND_PROCESS, rules.FLAG):
        assert acts_first(merchant, _snap(action))
    # Close is accepted on a flagged return: read first, never close what a person flagged.
    assert not acts_first(merchant, _snap(rules.CLOSE))
    # A shop whose Loop processes flagged returns.
    assert not acts_first(replace(merchant, loop_processes_flagged=True), _snap(rules.PROCESS))
    assert acts_first(replace(merchant, loop_processes_flagged=True), _snap(rules.FLAG))
    # An earlier attempt's claim: that call may have landed.
    assert not acts_first(merchant, _snap(rules.PROCESS, loop_action_claimed_at=datetime.now(UTC)))
    # Our last news says it is not open.
    assert not acts_first(merchant, _snap(rules.PROCESS, loop_state="review"))
