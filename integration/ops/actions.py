"""Operator actions on one return or one stored webhook: retry, re-decide, replay; retry of a
group of parked returns (with a dry run); and the backfill's query (returns Loop has that we
have no record of).

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

from integration.ops import queries
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


def retry_plan(ret: Return) -> tuple[str, str, bool]:
    """What a retry of a parked return does: the step it sends, the state it resumes from, and
    whether a Loop call already sent goes again (if Loop still shows the return open)."""
    step = ret.attention_step or "create_rma"
    resend = step == "act_in_loop" and ret.loop_call_sent_at is not None
    return step, BY_NAME[step].resume_from, resend


def retry_return(ctx: Context, merchant: str, loop_return_id: str, *, operator: str,
                 group: tuple[str, str] | None = None) -> ActionResult:
    """Operator retry of a parked return: resume at the step that failed. With `group` (step,
    reason key), only while the return is still parked in that group (retry_group)."""
    return _logged("retry", operator, _retry(ctx, merchant, loop_return_id, operator, group), merchant)


def _retry(ctx: Context, merchant: str, loop_return_id: str, operator: str,
           group: tuple[str, str] | None) -> ActionResult:
    with session_scope(ctx.sessions) as s:
        ret = lock_return(s, merchant, loop_return_id)
        if ret is None:
            return _no_return(merchant, loop_return_id)
        if ret.state != lc.NEEDS_ATTENTION:
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, loop_return_id=loop_return_id,
                                message=f"return {loop_return_id} is {ret.state}; nothing to retry")
        if group is not None and not queries.in_group(ret, *group):
            return ActionResult(outcome=Outcome.NOTHING_TO_DO, loop_return_id=loop_return_id,
                                message=f"return {loop_return_id} is now parked at "
                                        f"{queries.step_label(ret.attention_step)} for another "
                                        "reason; not retried with this group")
        step, target, resend = retry_plan(ret)
        lc.transition(ret, target, "retry requested by an operator", _by(operator, ret.attention_reason))
        if resend:
            # The operator confirms: if Loop still shows the return open, send the call again.
            ret.loop_call_sent_at = None
            lc.note(ret, "re-send confirmed by an operator",
                    _by(operator, f"{ret.decision} is sent again if Loop still shows the return open"))
        ret.attention_reason = None
        ret.attention_step = None
        send_step(ctx, s, ret, step)
        return ActionResult(outcome=Outcome.DONE, loop_return_id=loop_return_id, step=step,
                            message=f"return {loop_return_id}: retrying {step}")


# --- a group of parked returns at once ----------------------------------------------------------
BULK_LIMIT = 500  # returns per bulk retry; run it again for the rest


@dataclass(frozen=True)
class BulkItem:
    loop_return_id: str
    what: str  # what the retry would do, did, or why the return was skipped: one sentence


@dataclass(frozen=True, kw_only=True)
class BulkResult:
    dry_run: bool
    would_retry: list[BulkItem]  # dry run only
    retried: list[BulkItem]
    skipped: list[BulkItem]  # no longer parked in the group (retried, finished, parked again)
    left: int  # parked in the group beyond the limit: not looked at

    @property
    def found(self) -> int:
        return len(self.would_retry) + len(self.retried) + len(self.skipped) + self.left


def describe_retry(ret: Return) -> str:
    """What retrying this parked return does, in words (the dry run's line)."""
    step, target, resend = retry_plan(ret)
    what = f"resumes {step} (back to {target})"
    if resend:
        what += (f"; its {ret.decision} call was sent before: it is sent again if Loop still "
                 "shows the return open, and not if Loop shows it closed")
    return what


def retry_group(ctx: Context, merchant: str, step: str, reason_key: str, *, dry_run: bool,
                operator: str, limit: int = BULK_LIMIT) -> BulkResult:
    """Retry every return of a merchant parked at `step` for reasons with `reason_key`
    (queries.attention_groups), longest parked first, at most `limit`.

    Each return is retried by retry_return in a transaction of its own, and only if it is still
    parked in the group then: one retried meanwhile (or parked again for another reason) is
    skipped, not an error. The dry run changes nothing and says what each retry would do.
    """
    with ctx.sessions() as s:
        members = [(r.loop_return_id, describe_retry(r))
                   for r in queries.parked_in_group(s, merchant, step, reason_key)]
    chosen, left = members[:limit], max(len(members) - limit, 0)
    if dry_run:
        return BulkResult(dry_run=True, would_retry=[BulkItem(i, w) for i, w in chosen],
                          retried=[], skipped=[], left=left)
    retried, skipped = [], []
    for loop_return_id, what in chosen:
        result = retry_return(ctx, merchant, loop_return_id, operator=operator, group=(step, reason_key))
        if result.outcome is Outcome.DONE:
            retried.append(BulkItem(loop_return_id, what))
        else:
            skipped.append(BulkItem(loop_return_id, result.message))
    return BulkResult(dry_run=False, would_retry=[], retried=retried, skipped=skipped, left=left)


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


def missing_returns(ctx: Context, merchant_name: str, since: datetime,
                    states: tuple[str, ...] = LOOP_LIST_STATES) -> list[dict]:
    """Returns created in Loop since `since` (in any of `states`) that we have no record of."""
    loop = ctx.loop(ctx.merchant(merchant_name))
    now, fmt = ctx.now(), "%Y-%m-%d %H:%M:%S"
    listed: dict[str, dict] = {}
    start = as_utc(since)
    while start < now:
        end = min(start + timedelta(days=119), now)  # Loop refuses a window over 120 days
        for state in states:
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
