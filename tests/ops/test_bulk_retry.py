"""Retrying a group of parked returns (integration/ops/actions.retry_group), dry run first."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integration.ops.actions import BulkItem, retry_group, retry_return
from integration.ops.queries import NO_STEP, reason_key
from integration.settings import load_settings
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SKU = "SKU unknown to RLM: {} (barcode none); no RMA created. Fix the catalog or SKU mapping, then retry."
KEY = reason_key(SKU)


@pytest.fixture
def queued() -> list:
    return []


@pytest.fixture
def ctx(sessions, merchants, queued) -> Context:
    return Context(settings=load_settings(), merchants=merchants, sessions=sessions,
                   enqueue=lambda step, i: queued.append((step, i)))


def park(sessions, loop_id: str, step: str | None, reason: str, *, hours: int = 0,
         merchant: str = "demo", **fields) -> int:
    with sessions() as s:
        ret = Return(merchant=merchant, loop_return_id=loop_id, state=lc.NEEDS_ATTENTION,
                     units=[], rma_lines=[], attention_step=step, attention_reason=reason,
                     waiting_for=lc.Wait.PERSON, updated_at=T0 + timedelta(hours=hours), **fields)
        s.add(ret)
        s.commit()
        return ret.id


def snapshot(sessions) -> list[tuple]:
    with sessions() as s:
        return [(r.loop_return_id, r.state, r.attention_step, r.attention_reason, r.version,
                 r.waiting_for, r.loop_call_sent_at, len(r.timeline))
                for r in s.query(Return).order_by(Return.id)]


@pytest.fixture
def group(sessions) -> dict[str, int]:
    """Three demo returns parked at create_rma for unknown SKUs (longest parked: 40), and others
    that are not in that group."""
    ids = {loop_id: park(sessions, loop_id, "create_rma", SKU.format(sku), hours=hours)
           for loop_id, sku, hours in (("41", "B-2", 2), ("40", "A-1", 1), ("42", "C", 3))}
    park(sessions, "50", "transmit_rma", "RLM refused to transmit RA 7: closed")
    park(sessions, "60", "create_rma", SKU.format("X"), merchant="other")
    return ids


def test_the_dry_run_says_what_each_retry_would_do_and_changes_nothing(ctx, sessions, queued, group):
    before = snapshot(sessions)
    result = retry_group(ctx, "demo", "create_rma", KEY, dry_run=True, operator="test")
    assert snapshot(sessions) == before and queued == []
    assert result.dry_run and result.retried == [] and result.skipped == [] and result.left == 0
    assert result.would_retry == [BulkItem(i, "resumes create_rma (back to received)")
                                  for i in ("40", "41", "42")]  # longest parked first


def test_the_dry_run_warns_that_a_loop_call_already_sent_goes_again(ctx, sessions, queued):
    reason = "outcome of the process call unknown: Loop still shows the return open 6 h after it was sent"
    park(sessions, "70", "act_in_loop", reason, decision="process",
         loop_call_sent_at=T0, loop_action_claimed_at=T0)
    park(sessions, "71", "act_in_loop", reason.replace("6 h", "7 h"), decision="flag", hours=1)
    park(sessions, "72", None, "Loop return cancelled after goods were received in RLM (RA 9)")
    before = snapshot(sessions)
    sent = retry_group(ctx, "demo", "act_in_loop", reason_key(reason), dry_run=True, operator="test")
    assert [(i.loop_return_id, i.what) for i in sent.would_retry] == [
        ("70", "resumes act_in_loop (back to decided); its process call was sent before: it is sent "
               "again if Loop still shows the return open, and not if Loop shows it closed"),
        ("71", "resumes act_in_loop (back to decided)")]
    no_step = retry_group(ctx, "demo", NO_STEP, reason_key("Loop return cancelled after goods were "
                                                           "received in RLM (RA 1)"), dry_run=True, operator="test")
    assert [i.loop_return_id for i in no_step.would_retry] == ["72"]
    assert snapshot(sessions) == before and queued == []


def test_retry_all_retries_each_parked_return_once(ctx, sessions, queued, group):
    result = retry_group(ctx, "demo", "create_rma", KEY, dry_run=False, operator="test")
    assert [i.loop_return_id for i in result.retried] == ["40", "41", "42"]
    assert result.skipped == [] and result.would_retry == []
    assert queued == [("create_rma", group[i]) for i in ("40", "41", "42")]
    with sessions() as s:
        for rid in group.values():
            ret = s.get(Return, rid)
            assert (ret.state, ret.attention_reason, ret.attention_step) == (lc.RECEIVED, None, None)
            assert ret.timeline[-1].cause == "retry requested by an operator"
        assert {r.loop_return_id for r in s.query(Return).filter_by(state=lc.NEEDS_ATTENTION)} == {"50", "60"}
    again = retry_group(ctx, "demo", "create_rma", KEY, dry_run=False, operator="test")
    assert again.found == 0 and len(queued) == 3


def test_a_return_retried_meanwhile_is_skipped_not_retried_twice(ctx, sessions, queued, group):
    """Another operator retries 42 while the bulk retry works through 40 and 41."""
    other = Context(settings=ctx.settings, merchants=ctx.merchants, sessions=sessions,
                    enqueue=lambda step, i: queued.append((step, i)))

    def enqueue(step, return_id):
        queued.append((step, return_id))
        if return_id == group["40"]:
            assert retry_return(other, "demo", "42", operator="test").step == "create_rma"

    bulk = Context(settings=ctx.settings, merchants=ctx.merchants, sessions=sessions, enqueue=enqueue)
    result = retry_group(bulk, "demo", "create_rma", KEY, dry_run=False, operator="test")
    assert [i.loop_return_id for i in result.retried] == ["40", "41"]
    assert result.skipped == [BulkItem("42", "return 42 is received; nothing to retry")]
    assert sorted(queued) == sorted(("create_rma", rid) for rid in group.values())  # each once


def test_a_return_parked_again_for_another_reason_is_skipped(ctx, sessions, queued, group):
    def enqueue(step, return_id):
        queued.append((step, return_id))
        if return_id == group["40"]:  # meanwhile 41 was retried and failed otherwise
            with sessions() as s:
                ret = s.get(Return, group["41"])
                ret.attention_reason = "RLM answered 500: internal error"
                s.commit()

    bulk = Context(settings=ctx.settings, merchants=ctx.merchants, sessions=sessions, enqueue=enqueue)
    result = retry_group(bulk, "demo", "create_rma", KEY, dry_run=False, operator="test")
    assert [i.loop_return_id for i in result.retried] == ["40", "42"]
    assert result.skipped == [BulkItem("41", "return 41 is now parked at create_rma for another "
                                             "reason; not retried with this group")]
    with sessions() as s:
        assert s.get(Return, group["41"]).state == lc.NEEDS_ATTENTION


def test_a_limit_leaves_the_rest_for_the_next_run(ctx, sessions, queued, group):
    preview = retry_group(ctx, "demo", "create_rma", KEY, dry_run=True, limit=2, operator="test")
    assert [i.loop_return_id for i in preview.would_retry] == ["40", "41"] and preview.left == 1
    done = retry_group(ctx, "demo", "create_rma", KEY, dry_run=False, limit=2, operator="test")
    assert [i.loop_return_id for i in done.retried] == ["40", "41"] and done.left == 1
    assert retry_group(ctx, "demo", "create_rma", KEY, dry_run=True, operator="test").found == 1
