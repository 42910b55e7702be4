"""Operator actions on one return or one stored webhook: retry, re-decide, replay; and the
backfill's query (returns Loop has that we have no record of).

Each action returns an ActionResult instead of raising or printing: the CLI prints its message
(and exits 1 when the target does not exist), the pages flash it (or answer 404). Each names the
operator who asked (`operator`: the pages' login, the CLI's --operator): in the log line every
action writes and, for a return, in the detail of its timeline entries ("by alice"; the cause
texts stay as they were, other code matches them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select

from integration.store.db import session_scope
from integration.store.models import InboxStatus, Return, WebhookEvent
from integration.store.status import lock_return
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.reconcile import LOOP_LIST_STATES
from integration.workflow.runner import as_utc, enqueue_after_commit, send_step
from integration.workflow.steps import BY_NAME

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    DONE = "done"  # the step is queued (after the commit)
    NOTHING_TO_DO = "nothing_to_do"  # the target exists, but its state does not allow the action
    NOT_FOUND = "not_found"  # no such return or event


@dataclass(frozen=True, kw_only=True)
class ActionResult:
    outcome: Outcome
    message: str  # one sentence for a person: what the CLI prints and the pages flash
    loop_return_id: str | None = None
    event_id: int | None = None
    step: str | None = None  # the step queued, when DONE


def _no_return(merchant: str, loop_return_id: str) -> ActionResult:
    return ActionResult(outcome=Outcome.NOT_FOUND, loop_return_id=loop_return_id,
                        message=f"no return {loop_return_id} for merchant {merchant}")


def _by(operator: str, detail: str | None = None) -> str:
    """A timeline detail naming the operator: "by alice", or "by alice; <detail>"."""
    return f"by {operator}; {detail}" if detail else f"by {operator}"


def _logged(action: str, operator: str, result: ActionResult, merchant: str | None = None) -> ActionResult:
    """Log the action's outcome with who asked (ids and outcomes only, like every log line)."""
    fields = {"operator": operator, "action": action, "outcome": str(result.outcome),
              "merchant": merchant, "loop_return_id": result.loop_return_id, "event_id": result.event_id}
    log.info("%s by %s: %s", action, operator, result.outcome,
             extra={k: v for k, v in fields.items() if v is not None})
    return result


def retry_return(ctx: Context, merchant: str, loop_return_id: str, *, operator: str) -> ActionResult:
    """Operator retry of a parked return: resume at the step that failed."""
    return _logged("retry", operator, _retry(ctx, merchant, loop_return_id, operator), merchant)


def _retry(ctx: Context, merchant: str, loop_return_id: str, operator: str) -> ActionResult:
    with session_scope(ctx.sessions) as s:
        ret = lock_return(s, merchant, loop_return_id)
        if ret is None:
            return _no_return(merchant, loop_return_id)
        if ret.state != lc.NEEDS_ATTENTION:
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, loop_return_id=loop_return_id,
                                message=f"return {loop_return_id} is {ret.state}; nothing to retry")
        step = ret.attention_step or "create_rma"
        target = BY_NAME[step].resume_from
        lc.transition(ret, target, "retry requested by an operator", _by(operator, ret.attention_reason))
        if step == "act_in_loop" and ret.loop_call_sent_at is not None:
            # The operator confirms: if Loop still shows the return open, send the call again.
            ret.loop_call_sent_at = None
            lc.note(ret, "re-send confirmed by an operator",
                    _by(operator, f"{ret.decision} is sent again if Loop still shows the return open"))
        ret.attention_reason = None
        ret.attention_step = None
        send_step(ctx, s, ret, step)
        return ActionResult(outcome=Outcome.DONE, loop_return_id=loop_return_id, step=step,
                            message=f"return {loop_return_id}: retrying {step}")


# Parked at these steps, a return has not been acted on in Loop: its decision can be re-run.
REDECIDABLE_STEPS = {"decide", "act_in_loop"}


def can_redecide(ret: Return) -> bool:
    """Decided (or parked at the decision or the Loop action), and Loop not yet acted on."""
    if ret.loop_action_claimed_at is not None:
        return False
    return ret.state == lc.DECIDED or (ret.state == lc.NEEDS_ATTENTION
                                       and ret.attention_step in REDECIDABLE_STEPS)


def redecide_return(ctx: Context, merchant: str, loop_return_id: str, *, operator: str) -> ActionResult:
    """Operator re-decide: run the rules again for a return decided (or parked at the decision or
    the Loop action) but not yet acted on in Loop, e.g. after the merchant's criteria changed."""
    return _logged("redecide", operator, _redecide(ctx, merchant, loop_return_id, operator), merchant)


def _redecide(ctx: Context, merchant: str, loop_return_id: str, operator: str) -> ActionResult:
    with session_scope(ctx.sessions) as s:
        ret = lock_return(s, merchant, loop_return_id)
        if ret is None:
            return _no_return(merchant, loop_return_id)
        if not can_redecide(ret):
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, loop_return_id=loop_return_id,
                                message=f"return {loop_return_id} is {ret.state}; only a return "
                                        "decided but not yet acted on in Loop can be re-decided")
        if ret.state == lc.DECIDED:
            # The lifecycle has no way back from `decided`; holding the return first records why.
            lc.transition(ret, lc.NEEDS_ATTENTION, "held for a new decision by an operator",
                          _by(operator, f"previous decision: {ret.decision}"))
        ret.decision = ret.decision_detail = ret.loop_note = None
        ret.attention_reason = ret.attention_step = None
        lc.transition(ret, BY_NAME["decide"].resume_from, "re-decide requested by an operator",
                      _by(operator))
        send_step(ctx, s, ret, "decide")
        return ActionResult(outcome=Outcome.DONE, loop_return_id=loop_return_id, step="decide",
                            message=f"return {loop_return_id}: deciding again")


def replay_event(ctx: Context, event_id: int, *, operator: str) -> ActionResult:
    """Operator replay of a stored webhook: hand it to the pipeline again (every step is
    idempotent, so a replay can only bring our record up to date). Who asked goes in the log."""
    return _logged("replay", operator, _replay(ctx, event_id))


def _replay(ctx: Context, event_id: int) -> ActionResult:
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id, with_for_update=True)
        if ev is None:
            return ActionResult(outcome=Outcome.NOT_FOUND, event_id=event_id,
                                message=f"no webhook event {event_id}")
        if ev.payload is None:
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, event_id=event_id,
                                message=f"event {event_id} was stored as {ev.status} without a "
                                        "usable body; nothing to replay")
        if ev.status == InboxStatus.IGNORED:
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, event_id=event_id,
                                message=f"event {event_id} is a {ev.topic} webhook, which the "
                                        "service does not act on")
        ev.status, ev.attempts, ev.last_error = InboxStatus.RECEIVED, 0, None
        ev.next_attempt_at = ctx.now() + timedelta(seconds=ctx.settings.stuck_after_s)  # its lease
        enqueue_after_commit(ctx, s, "handle_event", event_id)
        return ActionResult(outcome=Outcome.DONE, event_id=event_id, step="handle_event",
                            loop_return_id=ev.loop_return_id,
                            message=f"event {event_id} ({ev.trigger} for return "
                                    f"{ev.loop_return_id}): replaying")


def missing_returns(ctx: Context, merchant_name: str, since: datetime) -> list[dict]:
    """Returns created in Loop since `since` (any state) that we have no record of."""
    loop = ctx.loop(ctx.merchant(merchant_name))
    now, fmt = ctx.now(), "%Y-%m-%d %H:%M:%S"
    listed: dict[str, dict] = {}
    start = as_utc(since)
    while start < now:
        end = min(start + timedelta(days=119), now)  # Loop refuses a window over 120 days
        for state in LOOP_LIST_STATES:
            for item in loop.iter_returns(start=start.strftime(fmt), end=end.strftime(fmt),
                                          state=state, filter_by="created_at"):
                listed.setdefault(str(item["id"]), item)
        start = end
    ids = list(listed)
    with session_scope(ctx.sessions) as s:
        known: set[str | None] = set()
        for i in range(0, len(ids), 500):
            known.update(s.scalars(select(Return.loop_return_id).where(
                Return.merchant == merchant_name, Return.loop_return_id.in_(ids[i:i + 500]))))
    return [item for loop_id, item in listed.items() if loop_id not in known]
