"""The sweeper: every SWEEP_INTERVAL_S, send the step of each return and inbox row whose
explicit schedule is due (`next_attempt_at`, indexed), and park what keeps failing.

It selects due rows only, so its cost follows what is due, not how many returns are open.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from integration.store.db import session_scope
from integration.store.models import OPEN_EVENTS, InboxStatus, Return, WebhookEvent
from integration.store.retention import finish_event
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.runner import (
    as_utc,
    enqueue_after_commit,
    send_step,
    send_step_in,
    slot_horizon_s,
)
from integration.workflow.steps import step_for_state


def sweep(ctx: Context, batch: int = 500) -> dict[str, int]:
    """Counts: inbox rows handed out again (`events`), lost step messages sent again (`steps`),
    waits come due (`due`), steps waiting for a merchant's slot published ahead (`slots`), rows
    given up on (`parked`)."""
    now = ctx.now()
    counts = {"events": 0, "steps": 0, "due": 0, "slots": 0, "parked": 0}
    with session_scope(ctx.sessions) as s:
        for ev in s.scalars(select(WebhookEvent).where(WebhookEvent.next_attempt_at <= now)
                            .order_by(WebhookEvent.next_attempt_at).limit(batch)):
            if ev.status not in OPEN_EVENTS:
                ev.next_attempt_at = None  # finished meanwhile
            elif ev.attempts >= ctx.settings.max_event_attempts:
                finish_event(ev, InboxStatus.FAILED, f"gave up after {ev.attempts} attempts")
                counts["parked"] += 1
            else:
                ev.next_attempt_at = now + timedelta(seconds=ctx.settings.stuck_after_s)
                enqueue_after_commit(ctx, s, "handle_event", ev.id)
                counts["events"] += 1
        backlog = _loop_backlog_explains_the_wait(ctx)
        for ret in s.scalars(select(Return).where(Return.next_attempt_at <= now)
                             .order_by(Return.next_attempt_at).limit(batch)):
            step = step_for_state(ret.state)
            if step is None:  # parked or finished meanwhile: nothing to send
                ret.next_attempt_at = None
            elif ret.waiting_for != lc.Wait.STEP:
                send_step(ctx, s, ret, step)  # a wait came due: the step looks again
                counts["due"] += 1
            elif ret.state == lc.DECIDED and backlog:
                # Most likely waiting its turn in the `loop` queue: re-sending would only lengthen
                # the queue, and counting it would park returns nothing is wrong with.
                ret.next_attempt_at = now + timedelta(seconds=ctx.settings.stuck_after_s)
            elif ret.step_attempts >= ctx.settings.max_event_attempts:
                # A poison message or a step that keeps dying: stop and say so.
                lc.park(ret, step, f"step {step} did not complete after {ret.step_attempts} attempts")
                counts["parked"] += 1
            else:
                ret.step_attempts += 1  # its message was lost (or its worker died): send again
                send_step(ctx, s, ret, step)
                counts["steps"] += 1
        # Slots due before the next sweep: published now, delivered when due, so a merchant's
        # backlog reaches its limit at the rate the limit frees, not once per sweep.
        horizon = now + timedelta(seconds=slot_horizon_s(ctx))
        for ret in s.scalars(select(Return).where(Return.next_attempt_at > now,
                                                  Return.next_attempt_at <= horizon,
                                                  Return.waiting_for == lc.Wait.SLOT)
                             .order_by(Return.next_attempt_at).limit(batch)):
            step, due = step_for_state(ret.state), as_utc(ret.next_attempt_at)
            if step is not None and due is not None:
                send_step_in(ctx, s, ret, step, (due - now).total_seconds())
                counts["slots"] += 1
    return counts


def _loop_backlog_explains_the_wait(ctx: Context) -> bool:
    """More Loop actions queued than Loop's rate limit lets through in STUCK_AFTER_S: a return
    decided that long ago can simply be waiting its turn."""
    backlog = ctx.loop_backlog()
    drained_meanwhile = ctx.settings.loop_requests_per_minute * ctx.settings.stuck_after_s / 60
    return backlog is not None and backlog >= drained_meanwhile / 2  # about two calls per action
