"""The Loop action: the decision sent to Loop at most once, and Loop's outcome waited for.

Process and remove-and-process are not idempotent and Loop only queues them: once such a call
may have reached Loop (its request left, whatever came back), it is never sent again on our own.
The return then waits for Loop to show the outcome on an explicit schedule (Wait.LOOP_OUTCOME).
Flag and close are harmless to repeat.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from integration.errors import FinalError, NotSent, RetryableError, StepFailed, UpstreamError
from integration.infra.ratelimit import MAX_WAIT_S as LIMITER_MAX_WAIT_S
from integration.merchants import Merchant
from integration.store.db import read_scope
from integration.store.models import Return, receipts_for
from integration.workflow import lifecycle as lc
from integration.workflow import rules, shadow
from integration.workflow.context import Context
from integration.workflow.events import ingest_return
from integration.workflow.grading import grades
from integration.workflow.runner import StepRun, Superseded, as_utc, locked, schedule, step

# Actions Loop refuses on any return that is not open (docs/loop-api.md §3.4): sent without
# reading the return first, a person's action since we last heard is answered by a refusal, and
# only then do we read. Close is accepted on a flagged (review) return, so it reads first.
_REFUSED_UNLESS_OPEN = frozenset({rules.PROCESS, rules.REMOVE_AND_PROCESS, rules.FLAG})


def acts_first(merchant: Merchant, snap: Return) -> bool:
    """Whether to send the action without reading Loop's state first (one call, not two).

    Only on a first attempt (no earlier claim: an earlier call may have landed), on a return
    last known open, with an action Loop refuses unless the return is open. A shop whose Loop
    processes flagged returns would process one a person has just flagged: it reads first."""
    if snap.loop_action_claimed_at is not None or snap.loop_call_sent_at is not None:
        return False
    if snap.loop_state and lc.LoopState.of(snap.loop_state) != lc.LoopState.OPEN:
        return False
    if snap.decision == rules.PROCESS and merchant.loop_processes_flagged:
        return False
    return snap.decision in _REFUSED_UNLESS_OPEN


def loop_calls_needed(ctx: Context, snap: Return) -> int:
    """Loop requests of one act_in_loop run, their tokens taken before it starts: the action,
    the state read unless it acts first, and a flag's note. (A refusal's read, rare, takes its
    own token; best-effort grading takes its own, or is skipped.) In shadow mode, none."""
    merchant = ctx.merchant(snap.merchant)
    if shadow.must_not_send(merchant, snap):
        return 0
    read = 0 if acts_first(merchant, snap) else 1
    return 1 + read + (1 if snap.decision == rules.FLAG else 0)


@step(requires={lc.DECIDED}, loop_calls=loop_calls_needed)
def act_in_loop(run: StepRun) -> None:
    """Send the decision to Loop, at most once per return unless a person confirms a re-send.

    Process and remove-and-process are not idempotent and Loop only queues them: once such a
    call may have reached Loop (its request left, whatever came back), it is never sent again
    on our own. The return then waits for Loop to show the outcome (close_rma, on a schedule).
    Flag and close are harmless to repeat: after an unclear answer they are sent again if Loop,
    re-read after the settle time, shows they did not land.

    A first attempt usually sends without reading (acts_first): Loop's refusal tells us a person
    acted meanwhile, and the return is read then.
    """
    ctx, return_id, snap = run.ctx, run.return_id, run.snap
    merchant = ctx.merchant(snap.merchant)
    if shadow.must_not_send(merchant, snap):  # shadow mode: recorded, never sent
        return shadow.hold_decided(run)
    loop = ctx.loop(merchant)
    action = snap.decision
    if action is None:  # cannot happen: DECIDED is entered with the decision
        raise StepFailed("no decision stored for the decided return")
    claimed = snap.loop_action_claimed_at
    if action in lc.ASYNC_ACTIONS and snap.loop_call_sent_at is not None:
        # An earlier attempt sent the call and has not recorded the answer: it is still waiting
        # for it, or was killed mid-call. It may be queued in Loop: once it has had the time to
        # answer, wait for the outcome; never re-send.
        _let_the_earlier_call_settle(ctx, claimed)
        return _after_call(ctx, loop, merchant, snap, accepted=False, sent_now=False)
    if acts_first(merchant, snap):
        return _send(ctx, loop, merchant, snap, action, _claim(ctx, return_id))
    details = loop.get_return(snap.loop_return_id)
    state = lc.LoopState.of(details.get("state"))

    # Ours landed (for a process call: one sent earlier, before an operator's retry).
    if claimed is not None and state == lc.LANDED_STATE.get(action) \
            and (action not in lc.ASYNC_ACTIONS or snap.loop_actioned_at is not None):
        return _after_call(ctx, loop, merchant, snap, accepted=True, sent_now=False, loop_shows=state)
    if state != lc.LoopState.OPEN:
        if claimed is not None:
            _release(ctx, return_id, claimed)  # ours did not land: whatever happened was not us
        cause = "Loop state re-read before acting" if claimed is None else "Loop state changed while we acted"
        ingest_return(ctx, merchant, details, cause=cause)
        return
    if claimed is None:
        claim = _claim(ctx, return_id)
    else:
        _let_the_earlier_call_settle(ctx, claimed)
        # It did not land (or never left). Re-claim first: of two workers, only one sends.
        claim = _claim(ctx, return_id, expected=claimed)
    _send(ctx, loop, merchant, snap, action, claim)


def _let_the_earlier_call_settle(ctx: Context, claimed: datetime | None) -> None:
    """An earlier claim's call may still be under way: retry once it has had the time to land."""
    age = (ctx.now() - as_utc(claimed)).total_seconds() if claimed is not None else float("inf")
    if age < settle_s(ctx):
        raise RetryableError("loop", "waiting to see whether the earlier call landed",
                             retry_after=settle_s(ctx) - age)


def _send(ctx: Context, loop, merchant: Merchant, snap: Return, action: str,
          claim: datetime | None) -> None:
    """Send the action under our claim (None: another worker holds it, nothing to do)."""
    if claim is None:
        return
    accepted = _call_action(ctx, loop, snap, action, snap.id, claim)
    _after_call(ctx, loop, merchant, snap, accepted=accepted, sent_now=True)


def _after_call(ctx: Context, loop, merchant: Merchant, snap: Return, *, accepted: bool,
                sent_now: bool, loop_shows: str | None = None) -> None:
    """Record that the action was sent (`accepted`: Loop said so) and move on: a flag gets its
    note, a process call waits for Loop's outcome, anything else closes the RMA next."""
    action = snap.decision or ""
    if action == rules.FLAG:
        _post_note_once(loop, snap, check_existing=not sent_now)
    graded = _grade(ctx, loop, merchant, snap)
    with locked(ctx, snap.id) as (s, ret):
        if ret is None or ret.state != lc.DECIDED:
            return
        if graded:
            lc.note(ret, "conditions sent to Loop's grading", graded)
        now = ctx.now()
        ret.loop_actioned_at = as_utc(ret.loop_call_sent_at) or as_utc(ret.loop_actioned_at) or now
        ret.loop_state = loop_shows or ret.loop_state
        if action == rules.FLAG:
            ret.decision_detail = {**(ret.decision_detail or {}), "note_posted": True}
        if accepted:
            lc.transition(ret, lc.LOOP_ACTIONED, _ACTION_TEXT[action], ret.loop_note)
        else:
            lc.transition(ret, lc.LOOP_ACTIONED, _UNCLEAR_TEXT,
                          f"{action} not sent again; waiting for Loop to show the outcome")
        if action in lc.ASYNC_ACTIONS and ret.loop_state != lc.LoopState.CLOSED:
            # The close step waits for `return.closed` (or a processing failure), and reads
            # Loop on this schedule should neither webhook come.
            first = outcome_checks(ctx, ret.loop_actioned_at, now)
            lc.set_wait(ret, lc.Wait.LOOP_OUTCOME, first, _outcome_deadline(ctx, ret))
        else:
            schedule(ctx, s, ret)


_ACTION_TEXT = {
    rules.PROCESS: "processed in Loop (queued)",
    rules.REMOVE_AND_PROCESS: "missing items removed in Loop, rest processed",
    rules.FLAG: "flagged in Loop with a note",
    rules.CLOSE: "closed in Loop (expired)",
}
_UNCLEAR_TEXT = "sent to Loop, answer lost"  # the detail says what happens next


def settle_s(ctx: Context) -> float:
    """How long after a claim we may conclude from Loop's state that our call did not land:
    longer than the call itself can take (waiting for a rate-limit slot, then the request)."""
    connect, read = ctx.settings.loop_timeout
    return max(ctx.settings.loop_settle_s, LIMITER_MAX_WAIT_S + connect + read + 10.0)


def outcome_checks(ctx: Context, sent_at: datetime, now: datetime) -> datetime:
    """When to read Loop next while waiting for a process call's outcome: LOOP_SETTLE_S after
    sending, then after as long again as we have waited so far (the gaps double), never more
    than LOOP_OUTCOME_CHECK_MAX_S apart. Reading is harmless; it only costs a Loop request."""
    waited = max(0.0, (now - sent_at).total_seconds())
    first = max(1.0, ctx.settings.loop_settle_s)
    gap = min(ctx.settings.loop_outcome_check_max_s, max(first, waited))
    return now + timedelta(seconds=gap)


def _outcome_deadline(ctx: Context, ret: Return) -> datetime:
    sent = as_utc(ret.loop_actioned_at) or ctx.now()
    return sent + timedelta(seconds=ctx.settings.loop_outcome_window_s)


def _claim(ctx: Context, return_id: int, expected: datetime | None = None) -> datetime | None:
    """Mark that we are sending the action now, so no other worker (or retry) acts blindly
    again: the claim and the send marker in one write, the last before the request leaves.

    Succeeds only if the claim is still `expected` (None: unclaimed); returns the new claim,
    timed once the row is ours. Nothing that can wait lies between this write and the request:
    the step's Loop tokens were taken before it started (runner.step), and any read comes
    before the claim. A request that then does not leave releases it (_call_action), so "sent"
    means it may have reached Loop.
    """
    return _swap_claim(ctx, return_id, expected, take=True)


def _release(ctx: Context, return_id: int, claim: datetime) -> None:
    _swap_claim(ctx, return_id, claim, take=False)


def _swap_claim(ctx: Context, return_id: int, expected: datetime | None, take: bool) -> datetime | None:
    """Compare-and-set on the claim, under the row lock; the send marker goes with it. Returns
    the new claim (None: the claim was not `expected`, or it is released)."""
    with locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state != lc.DECIDED or as_utc(ret.loop_action_claimed_at) != as_utc(expected):
            return None
        new = ctx.now() if take else None
        ret.loop_action_claimed_at = ret.loop_call_sent_at = new
        return new


def _call_action(ctx: Context, loop, snap: Return, action: str, return_id: int,
                 claim: datetime) -> bool:
    """Send the action once. True: Loop accepted it. False: a process / remove call whose answer
    was lost after it may have reached Loop (never re-sent on our own). A clear refusal, or a
    call that never left, raises."""
    try:
        _send_action(loop, snap, action)
    except NotSent:
        _release(ctx, return_id, claim)  # nothing happened in Loop: the retry starts afresh
        raise
    except FinalError as exc:
        # Refused: nothing happened in Loop, so the claim goes (a retry starts afresh). Perhaps
        # a person acted in the meantime: Loop's state tells.
        _release(ctx, return_id, claim)
        details = loop.get_return(snap.loop_return_id)
        if lc.LoopState.of(details.get("state")) != lc.LoopState.OPEN:
            ingest_return(ctx, ctx.merchant(snap.merchant), details,
                          cause=f"Loop refused {action} ({exc.code or exc.message})")
            raise Superseded() from None
        raise StepFailed(f"Loop refused to {action} the return: {exc.message} ({exc.code})") from None
    except RetryableError:
        if action in lc.ASYNC_ACTIONS:
            return False
        raise  # flag / close: re-read after the settle time, sent again if it did not land
    return True


def _send_action(loop, snap: Return, action: str) -> None:
    if action == rules.PROCESS:
        loop.process(snap.loop_return_id, {"rlm_ra_number": str(snap.rma_number)})
    elif action == rules.FLAG:
        loop.flag(snap.loop_return_id)
    elif action == rules.REMOVE_AND_PROCESS:
        loop.remove_items(snap.loop_return_id, (snap.decision_detail or {}).get("remove_line_item_ids", []))
    elif action == rules.CLOSE:
        loop.close(snap.loop_return_id)
    else:
        raise StepFailed(f"unknown decision {action!r}")


def _grade(ctx: Context, loop, merchant: Merchant, snap: Return) -> str | None:
    """Optionally tell Loop what condition each unit arrived in. Best effort: grading informs
    the merchant's team and must never hold up the return itself."""
    if not merchant.criteria.grade_in_loop or snap.decision not in (rules.PROCESS, rules.FLAG,
                                                                    rules.REMOVE_AND_PROCESS):
        return None
    with read_scope(ctx.sessions) as s:
        receipts = [{"lines": r.lines} for r in receipts_for(s, snap.merchant, snap.rma_number)]
    items = grades(snap.rma_lines, receipts, ctx.now())
    try:
        loop.grade(items)
    except UpstreamError as exc:
        return f"grading failed, the return goes on: {exc.message}"
    return f"{len(items)} unit(s) graded"


def _post_note_once(loop, snap: Return, check_existing: bool) -> None:
    note = snap.loop_note
    if not note or (snap.decision_detail or {}).get("note_posted"):
        return
    if check_existing and any(n.get("content") == note for n in loop.get_notes(snap.loop_return_id)):
        return  # an earlier attempt posted it
    loop.create_note(snap.loop_return_id, note)


def loop_finished_processing(run: StepRun) -> bool:
    """Whether Loop shows our process call done, so the RMA can be closed.

    Loop processes in the background and tells us by `return.closed` (or by
    `return.processing.failed`, which parks the return). Should neither come, Loop is read on
    the return's schedule (outcome_checks); past the window a person decides, as the call may
    never have reached Loop, or Loop may still be working on it.
    """
    ctx, snap = run.ctx, run.snap
    if snap.loop_state == lc.LoopState.CLOSED:  # Loop's webhook told us
        return True
    due = as_utc(snap.next_attempt_at)
    if snap.waiting_for == lc.Wait.LOOP_OUTCOME and due is not None and ctx.now() < due:
        return False  # a repeated message: the sweeper sends the step again when it is due
    details = ctx.loop(ctx.merchant(snap.merchant)).get_return(snap.loop_return_id)
    state = lc.LoopState.of(details.get("state"))
    if state == lc.LoopState.CLOSED:
        return True
    now = ctx.now()
    with locked(ctx, snap.id) as (_, ret):
        if ret is None or ret.state != lc.LOOP_ACTIONED:
            return False
        deadline = as_utc(ret.wait_deadline) or _outcome_deadline(ctx, ret)
        if state != lc.LoopState.OPEN:
            lc.park(ret, "act_in_loop", f"Loop shows the return {state} after our {ret.decision} call; "
                                        "review it in Loop, then retry")
        elif now >= deadline:
            hours = ctx.settings.loop_outcome_window_s / 3600
            lc.park(ret, "act_in_loop",
                    f"outcome of the {ret.decision} call unknown: Loop still shows the return open "
                    f"{hours:g} h after it was sent, with no processing failure reported. Retry "
                    "sends it again if Loop still shows it open; check in Loop first that it is "
                    "not being processed")
        else:
            check = outcome_checks(ctx, as_utc(ret.loop_actioned_at) or now, now)
            lc.set_wait(ret, lc.Wait.LOOP_OUTCOME, min(deadline, check), deadline)
    return False


