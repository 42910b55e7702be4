"""Scheduled safety nets: the sweeper, the Loop reconciliation pull, and operator retries."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from . import lifecycle as lc
from .context import Context
from .db import after_commit, session_scope
from .models import FeedCursor, Return, WebhookEvent
from .pipeline import as_utc, ingest_return

log = logging.getLogger(__name__)

# The Loop list omits review and cancelled unless asked for them by name (loop-api.md §3.2).
LOOP_LIST_STATES = ("open", "closed", "expired", "review", "cancelled")
ACTIVE_STEPS = {state for state in lc.NEXT_STEP if state not in lc.WAITING_FOR_GOODS}


def sweep(ctx: Context, batch: int = 500) -> dict[str, int]:
    """Re-drive inbox rows and returns that stopped moving; decide returns whose wait is over."""
    now = ctx.now()
    stale = now - timedelta(seconds=ctx.settings.stuck_after_s)
    counts = {"events": 0, "steps": 0, "due": 0, "parked": 0}
    with session_scope(ctx.sessions) as s:
        for ev in s.scalars(select(WebhookEvent).where(
                WebhookEvent.status.in_(("received", "processing")),
                WebhookEvent.updated_at < stale).limit(batch)):
            if ev.attempts >= ctx.settings.max_event_attempts:
                ev.status, ev.last_error = "failed", f"gave up after {ev.attempts} attempts"
                counts["parked"] += 1
                continue
            ev.updated_at = now  # so the next sweep waits a full period again
            _later(ctx, s, "handle_event", ev.id)
            counts["events"] += 1
        for ret in s.scalars(select(Return).where(Return.state.in_(ACTIVE_STEPS),
                                                  Return.updated_at < stale).limit(batch)):
            ret.step_attempts += 1
            if ret.step_attempts > ctx.settings.max_event_attempts:
                # A poison message or a step that keeps dying: stop and say so.
                lc.park(ret, lc.NEXT_STEP[ret.state],
                        f"step {lc.NEXT_STEP[ret.state]} did not complete after "
                        f"{ret.step_attempts - 1} attempts")
                counts["parked"] += 1
                continue
            ret.updated_at = now
            _later(ctx, s, lc.NEXT_STEP[ret.state], ret.id)
            counts["steps"] += 1
        for ret in s.scalars(select(Return).where(
                Return.state.in_(lc.WAITING_FOR_GOODS),
                or_(Return.expires_at <= now, Return.first_receipt_at.is_not(None),
                    Return.state == lc.FULLY_RECEIVED)).limit(batch)):
            if _wait_is_over(ctx, ret, now):
                _later(ctx, s, "decide", ret.id)
                counts["due"] += 1
    return counts


def _wait_is_over(ctx: Context, ret: Return, now: datetime) -> bool:
    if ret.state == lc.FULLY_RECEIVED:
        return True
    expires = as_utc(ret.expires_at)
    if expires is not None and now >= expires:
        return True
    first = as_utc(ret.first_receipt_at)
    grace = ctx.merchant(ret.merchant).criteria.partial_grace_s
    return first is not None and now >= first + timedelta(seconds=grace)


def _later(ctx: Context, s, step: str, target_id: int) -> None:
    after_commit(s, lambda: ctx.enqueue(step, target_id))


def reconcile_loop(ctx: Context, merchant_name: str, overlap_s: float = 3600.0) -> int:
    """Pull Loop's returns list since the last pull and feed what changed through the same path.

    This is what finds returns whose webhooks never arrived (we were down, Loop gave up).
    """
    merchant = ctx.merchant(merchant_name)
    loop = ctx.loop(merchant)
    now = ctx.now()
    with session_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "loop_returns"))
        last = datetime.fromisoformat(row.cursor) if row and row.cursor else now - timedelta(days=7)
    start = max(as_utc(last) - timedelta(seconds=overlap_s), now - timedelta(days=119))
    fmt = "%Y-%m-%d %H:%M:%S"
    seen = 0
    for state in LOOP_LIST_STATES:
        for item in loop.iter_returns(start=start.strftime(fmt), end=now.strftime(fmt), state=state):
            if _changed(ctx, merchant.name, item):
                ingest_return(ctx, merchant, item, cause="found by the Loop returns pull")
                seen += 1
    with session_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "loop_returns")) or FeedCursor(
            merchant=merchant.name, feed="loop_returns")
        row.cursor = now.isoformat()
        s.add(row)
    return seen


def _changed(ctx: Context, merchant: str, item: dict) -> bool:
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant,
                                            Return.loop_return_id == str(item["id"])))
        if ret is None:
            return True
        state = (item.get("state") or "").lower()
        return ret.loop_state != ("review" if state == "needs review" else state)


def retry_return(ctx: Context, merchant: str, loop_return_id: str) -> str:
    """Operator retry of a parked return: resume at the step that failed."""
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant,
                                            Return.loop_return_id == loop_return_id))
        if ret is None:
            raise LookupError(f"no return {loop_return_id} for merchant {merchant}")
        if ret.state != lc.NEEDS_ATTENTION:
            return f"return {loop_return_id} is {ret.state}; nothing to retry"
        step = ret.attention_step or "create_rma"
        target = lc.RESUME_STATE[step]
        lc.transition(ret, target, "retry requested by an operator", ret.attention_reason)
        ret.attention_reason = None
        ret.attention_step = None
        ret_id = ret.id
        after_commit(s, lambda: ctx.enqueue(step, ret_id))
        return f"return {loop_return_id}: retrying {step}"
