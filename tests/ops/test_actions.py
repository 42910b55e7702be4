"""The operator actions (integration/ops/actions.py): what each answers, and what it queues."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integration.ops.actions import (
    ActionResult,
    Outcome,
    redecide_return,
    replay_event,
    retry_return,
)
from integration.settings import load_settings
from integration.store.models import Return, WebhookEvent
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context


@pytest.fixture
def queued() -> list:
    return []


@pytest.fixture
def ctx(sessions, merchants, queued) -> Context:
    return Context(settings=load_settings(), merchants=merchants, sessions=sessions,
                   enqueue=lambda step, i: queued.append((step, i)))


def add_return(sessions, loop_id: str, state: str, **fields) -> int:
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id=loop_id, state=lc.RECEIVED, units=[],
                     rma_lines=[], **fields)
        s.add(ret)
        s.flush()
        if state != lc.RECEIVED:
            ret.state = state
        s.commit()
        return ret.id


def test_retry_resumes_a_parked_return_at_the_step_that_failed(ctx, sessions, queued):
    rid = add_return(sessions, "11", lc.NEEDS_ATTENTION, attention_step="transmit_rma",
                     attention_reason="RLM refused the transmission")
    assert retry_return(ctx, "demo", "11", operator="alice") == ActionResult(
        outcome=Outcome.DONE, loop_return_id="11", step="transmit_rma",
        message="return 11: retrying transmit_rma")
    assert queued == [("transmit_rma", rid)]


def test_retry_of_a_return_not_parked_does_nothing(ctx, sessions, queued):
    add_return(sessions, "12", lc.TRANSMITTED)
    result = retry_return(ctx, "demo", "12", operator="alice")
    assert (result.outcome, result.step) == (Outcome.NOTHING_TO_DO, None)
    assert result.message == "return 12 is transmitted; nothing to retry"
    assert queued == []


def test_an_unknown_return_is_not_found(ctx, sessions, queued):
    add_return(sessions, "13", lc.NEEDS_ATTENTION)
    for action in (retry_return, redecide_return):
        result = action(ctx, "other-merchant", "13", operator="alice")  # the id exists, for another merchant
        assert (result.outcome, result.loop_return_id) == (Outcome.NOT_FOUND, "13")
        assert result.message == "no return 13 for merchant other-merchant"
    assert queued == []


def test_redecide_only_before_loop_was_acted_on(ctx, sessions, queued):
    rid = add_return(sessions, "14", lc.DECIDED, decision="flag")
    add_return(sessions, "15", lc.DECIDED, decision="process", loop_action_claimed_at=datetime.now(UTC))
    assert redecide_return(ctx, "demo", "14", operator="alice").outcome is Outcome.DONE
    assert queued == [("decide", rid)]
    refused = redecide_return(ctx, "demo", "15", operator="alice")
    assert refused.outcome is Outcome.NOTHING_TO_DO
    assert "only a return decided but not yet acted on in Loop" in refused.message
    assert queued == [("decide", rid)]


def test_replay_hands_a_stored_event_back_to_the_pipeline(ctx, sessions, queued):
    with sessions() as s:
        done = WebhookEvent(merchant="demo", dedupe_key="a", body_sha256="a", status="done", attempts=3,
                            topic="return", trigger="return.updated", loop_return_id="77",
                            payload={"topic": "return", "loop_return_id": "77"})
        bodyless = WebhookEvent(merchant="demo", dedupe_key="b", body_sha256="b", status="invalid")
        ignored = WebhookEvent(merchant="demo", dedupe_key="c", body_sha256="c", status="ignored",
                               topic="label", payload={"topic": "label"})
        s.add_all([done, bodyless, ignored])
        s.commit()
    unknown = replay_event(ctx, 999_999, operator="alice")
    assert (unknown.outcome, unknown.event_id, unknown.message) == (
        Outcome.NOT_FOUND, 999_999, "no webhook event 999999")
    nothing = replay_event(ctx, bodyless.id, operator="alice")
    assert nothing.outcome is Outcome.NOTHING_TO_DO and "nothing to replay" in nothing.message
    label = replay_event(ctx, ignored.id, operator="alice")
    assert label.outcome is Outcome.NOTHING_TO_DO and "does not act on" in label.message
    assert queued == []

    replayed = replay_event(ctx, done.id, operator="alice")
    assert (replayed.outcome, replayed.step, replayed.loop_return_id) == (Outcome.DONE, "handle_event", "77")
    assert replayed.message == f"event {done.id} (return.updated for return 77): replaying"
    assert queued == [("handle_event", done.id)]
    with sessions() as s:
        again = s.get(WebhookEvent, done.id)
        assert (again.status, again.attempts) == ("received", 0)


def timeline(sessions, rid: int) -> list[tuple[str, str | None]]:
    with sessions() as s:
        return [(t.cause, t.detail) for t in s.get(Return, rid).timeline]


def test_every_manual_action_names_its_operator_on_the_timeline_and_in_the_log(ctx, sessions, caplog):
    caplog.set_level("INFO", logger="integration.ops.actions")
    parked = add_return(sessions, "16", lc.NEEDS_ATTENTION, attention_step="create_rma",
                        attention_reason="SKU unknown to RLM")
    retry_return(ctx, "demo", "16", operator="alice")
    # The cause keeps its text (other code matches it); the detail says who.
    assert timeline(sessions, parked)[-1] == ("retry requested by an operator", "by alice; SKU unknown to RLM")

    decided = add_return(sessions, "17", lc.DECIDED, decision="flag")
    redecide_return(ctx, "demo", "17", operator="bob.smith")
    assert timeline(sessions, decided)[-2:] == [
        ("held for a new decision by an operator", "by bob.smith; previous decision: flag"),
        ("re-decide requested by an operator", "by bob.smith")]

    with sessions() as s:
        ev = WebhookEvent(merchant="demo", dedupe_key="d", body_sha256="d", status="failed",
                          topic="return", trigger="return.created", loop_return_id="16",
                          payload={"topic": "return", "loop_return_id": "16"})
        s.add(ev)
        s.commit()
    replay_event(ctx, ev.id, operator="carol")
    logged = [(r.action, r.operator, r.outcome) for r in caplog.records if hasattr(r, "operator")]
    assert logged == [("retry", "alice", "done"), ("redecide", "bob.smith", "done"), ("replay", "carol", "done")]
    replayed = next(r for r in caplog.records if getattr(r, "action", None) == "replay")
    assert (replayed.event_id, replayed.loop_return_id) == (ev.id, "16")
    assert replayed.getMessage() == "replay by carol: done"
