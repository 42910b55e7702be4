"""Scheduled safety nets: the sweeper and the Loop reconciliation pull."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select

from integration.store.db import after_commit, session_scope
from integration.store.models import FeedCursor, Receipt, Return, WebhookEvent
from integration.store.retention import finish_event
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.pipeline import as_utc, ingest_return, loop_state

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
                finish_event(ev, "failed", f"gave up after {ev.attempts} attempts")
                counts["parked"] += 1
                continue
            ev.updated_at = now  # so the next sweep waits a full period again
            _later(ctx, s, "handle_event", ev.id)
            counts["events"] += 1
        active = ACTIVE_STEPS
        if _loop_backlog_explains_the_wait(ctx):
            active = ACTIVE_STEPS - {lc.DECIDED}  # their actions are most likely in that queue
        # Steps with no schedule of their own: re-driven when they stop moving.
        for ret in s.scalars(select(Return).where(Return.state.in_(active), Return.waiting_for.is_(None),
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
        # Waits with an explicit schedule: the step looks again when due (and parks the return
        # past its deadline). Until it has run, each sweep sends it again; the step's own due
        # check makes a repeat cheap.
        for ret in s.scalars(select(Return).where(Return.next_check_at <= now,
                                                  Return.state.in_(ACTIVE_STEPS)).limit(batch)):
            _later(ctx, s, lc.NEXT_STEP[ret.state], ret.id)
            counts["due"] += 1
        for ret in s.scalars(select(Return).where(
                Return.state.in_(lc.WAITING_FOR_GOODS),
                or_(Return.expires_at <= now, Return.first_receipt_at.is_not(None),
                    Return.state == lc.FULLY_RECEIVED)).limit(batch)):
            if _wait_is_over(ctx, ret, now):
                _later(ctx, s, "decide", ret.id)
                counts["due"] += 1
        # Receipts stored after the last decision looked: its decide message was lost (a worker
        # killed while holding it, or the broker restarted before writing it to disk). Decide
        # now, whatever the receiving state, rather than at the end of a grace period. (Receipts
        # younger than one sweep most likely have their decide message still in the queue.)
        settled = now - timedelta(seconds=ctx.settings.sweep_interval_s)
        newer = exists().where(Receipt.merchant == Return.merchant, Receipt.ra_number == Return.rma_number,
                               Receipt.stored_at < settled,
                               or_(Return.receipts_seen_at.is_(None),
                                   Receipt.stored_at > Return.receipts_seen_at))
        for ret in s.scalars(select(Return).where(Return.state.in_(lc.WAITING_FOR_GOODS), newer)
                             .limit(batch)):
            _later(ctx, s, "decide", ret.id)
            counts["steps"] += 1
    return counts


def _loop_backlog_explains_the_wait(ctx: Context) -> bool:
    """More Loop actions queued than Loop's rate limit lets through in STUCK_AFTER_S: a return
    decided that long ago can simply be waiting its turn. Re-driving it would only lengthen the
    queue, and counting attempts would park returns nothing is wrong with."""
    backlog = ctx.loop_backlog()
    drained_meanwhile = ctx.settings.loop_requests_per_minute * ctx.settings.stuck_after_s / 60
    return backlog is not None and backlog >= drained_meanwhile / 2  # about two calls per action


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
            news = _news(ctx, merchant.name, item)
            if news is None:
                continue
            # A known return whose listed state differs: act only on what its details say now,
            # as for webhooks (a list page is a snapshot, and may be stale by the time we act).
            current = loop.get_return(str(item["id"])) if news == "changed" else item
            ingest_return(ctx, merchant, current, cause="found by the Loop returns pull")
            seen += 1
    with session_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "loop_returns")) or FeedCursor(
            merchant=merchant.name, feed="loop_returns")
        row.cursor = now.isoformat()
        s.add(row)
    return seen


def _news(ctx: Context, merchant: str, item: dict) -> str | None:
    """"new" (never seen), "changed" (its listed state differs from ours), or None."""
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant,
                                            Return.loop_return_id == str(item["id"])))
        if ret is None:
            return "new"
        return "changed" if ret.loop_state != loop_state(item.get("state")) else None
