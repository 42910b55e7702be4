"""The workflow steps. Each takes an id, re-reads state, and is safe to run twice.

No database transaction is held open across an HTTP call: a step reads a snapshot, talks to
Loop or RLM, then re-reads the row under a lock and writes only if the return is still where
the step expected it. The next step is enqueued only after the commit.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import overload

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from integration.errors import (
    FinalError,
    NotFound,
    NotSent,
    RetryableError,
    StepFailed,
    UpstreamError,
)
from integration.infra.ratelimit import MAX_WAIT_S as LIMITER_MAX_WAIT_S
from integration.merchants import Merchant
from integration.store.db import after_commit, session_scope
from integration.store.models import FeedCursor, Receipt, Return, WebhookEvent, receipts_for
from integration.store.retention import finish_event
from integration.workflow import lifecycle as lc
from integration.workflow import rules
from integration.workflow.context import Context
from integration.workflow.grading import grades
from integration.workflow.mapping import (
    build_ra,
    group_units,
    item_fields,
    money,
    parse_loop_time,
    ra_line,
    reason_for,
    rma_ref,
    ship_from,
    sku_candidates,
    unit_from_loop,
)
from integration.workflow.notes import flag_note

log = logging.getLogger(__name__)

CLOSE_REASON = {
    rules.PROCESS: "LOOP_PROCESSED",
    rules.REMOVE_AND_PROCESS: "LOOP_PROCESSED",
    rules.FLAG: "LOOP_FLAG_RESOLVED",
    rules.CLOSE: "EXPIRED",
    "by_person": "MANUAL",
}
# Actions Loop only queues: their outcome shows later as the return closing.
ASYNC_ACTIONS = {rules.PROCESS, rules.REMOVE_AND_PROCESS}
# Loop state that shows each of our actions landed.
LANDED_STATE = {rules.PROCESS: "closed", rules.REMOVE_AND_PROCESS: "closed",
                rules.CLOSE: "closed", rules.FLAG: "review"}


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def loop_state(raw: str | None) -> str:
    state = (raw or "").strip().lower()
    return "review" if state == "needs review" else state


# --- small transaction helpers ---------------------------------------------------------------
def _snapshot(ctx: Context, return_id: int) -> Return | None:
    with session_scope(ctx.sessions) as s:
        return s.get(Return, return_id)


@contextmanager
def _locked(ctx: Context, return_id: int) -> Iterator[tuple[Session, Return | None]]:
    with session_scope(ctx.sessions) as s:
        yield s, s.get(Return, return_id, with_for_update=True)


def _enqueue_next(ctx: Context, s: Session, ret: Return) -> None:
    step = lc.NEXT_STEP.get(ret.state)
    if step and ret.state not in lc.WAITING_FOR_GOODS:
        return_id = ret.id
        after_commit(s, lambda: ctx.enqueue(step, return_id))


def park_return(ctx: Context, return_id: int, step: str, reason: str) -> None:
    """needs_attention with a reason an operator can act on; nothing is dropped."""
    with _locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state in lc.TERMINAL or ret.state == lc.NEEDS_ATTENTION:
            return
        lc.park(ret, step, reason[:2000])
    log.warning("return parked", extra={"return_id": return_id, "step": step})


# --- events ----------------------------------------------------------------------------------
def handle_event(ctx: Context, event_id: int) -> None:
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id, with_for_update=True)
        if ev is None or ev.status not in ("received", "processing"):
            return
        ev.status, ev.attempts = "processing", ev.attempts + 1
        merchant_name, payload = ev.merchant, dict(ev.payload or {})

    topic = payload.get("topic")
    merchant = ctx.merchants.get(merchant_name)
    if merchant is None:
        return _finish_event(ctx, event_id, "failed", f"unknown merchant {merchant_name}")
    if topic == "return.processing":
        _processing_failed(ctx, merchant, payload)
    elif topic == "return":
        try:
            _return_event(ctx, merchant, payload)
        except NotFound:
            return _finish_event(ctx, event_id, "failed", "Loop does not know this return")
    else:
        return _finish_event(ctx, event_id, "ignored", f"topic {topic} is not acted on")
    _finish_event(ctx, event_id, "done", None)


def _return_event(ctx: Context, merchant: Merchant, payload: dict) -> None:
    """Record a `return.*` webhook, re-reading Loop only when its state could change our course.

    Webhooks arrive late and out of order, so a payload's state is trusted only where it cannot
    mislead: a new return's creation (its line items are what the RMA is built from; a later
    cancellation still cancels the RMA), or a non-open state for a return whose course no Loop
    change alters any more.
    """
    loop_id, trigger = payload["loop_return_id"], payload["trigger"]
    cause = f"webhook {trigger}"
    state = loop_state(payload.get("state"))
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant.name,
                                            Return.loop_return_id == loop_id))
        known = None if ret is None else (ret.state, ret.loop_action_claimed_at is not None)
    as_details = {**payload, "id": loop_id}
    if known is None and trigger == "return.created" and state == "open":
        ingest_return(ctx, merchant, as_details, cause)
    elif known is not None and trigger == "return.created":
        return  # a late creation notice says nothing we do not know
    elif known is not None and not _reacts_to_loop(*known) and state not in ("", "open"):
        ingest_return(ctx, merchant, as_details, cause)
    else:
        ingest_return(ctx, merchant, ctx.loop(merchant).get_return(loop_id), cause)


def _reacts_to_loop(state: str, claimed: bool) -> bool:
    """Whether a Loop state change can still alter what we do with a return in `state`."""
    return state in (lc.RECEIVED, lc.RMA_CREATED) or state in lc.WAITING_FOR_GOODS \
        or (state == lc.DECIDED and not claimed)


def _finish_event(ctx: Context, event_id: int, status: str, error: str | None) -> None:
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id)
        if ev is not None:
            finish_event(ev, status, error)


def fail_event(ctx: Context, event_id: int, error: str) -> None:
    _finish_event(ctx, event_id, "failed", error[:2000])


def _processing_failed(ctx: Context, merchant: Merchant, payload: dict) -> None:
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant.name,
                                            Return.loop_return_id == payload["loop_return_id"]))
        if ret is None:
            return
        message = payload.get("message") or "no message"
        reason = f"Loop could not process the return: {message} (source {payload.get('source')})"
        if ret.state in lc.TERMINAL or ret.state == lc.NEEDS_ATTENTION:
            # Too late to hold anything back: record it and make it visible.
            ret.attention_reason = reason
            lc.note(ret, "return.processing.failed", reason)
        else:
            # A retry processes again (our own call failed) or resumes the step that was next.
            step = "act_in_loop" if ret.state == lc.LOOP_ACTIONED else lc.NEXT_STEP.get(ret.state)
            lc.park(ret, step, reason)


def ingest_return(ctx: Context, merchant: Merchant, details: dict, cause: str) -> int:
    """Record a return as Loop reports it now (from a webhook or the list pull) and react."""
    for attempt in range(2):
        try:
            return _ingest(ctx, merchant, details, cause)
        except IntegrityError:
            if attempt:  # a concurrent insert won the race twice: cannot happen, so surface it
                raise
    raise AssertionError("unreachable")


def _ingest(ctx: Context, merchant: Merchant, details: dict, cause: str) -> int:
    loop_id = str(details["id"])
    state = loop_state(details.get("state"))
    with session_scope(ctx.sessions) as s:
        ret = s.scalar(select(Return).where(Return.merchant == merchant.name,
                                            Return.loop_return_id == loop_id).with_for_update())
        before = None  # a new return always needs its first step
        if ret is None:
            ret = _new_return(merchant, details, state)
            s.add(ret)
            lc.note(ret, cause, f"Loop state {state}")
            s.flush()
        else:
            before = ret.state
            if ret.loop_state != state:
                lc.note(ret, cause, f"Loop state {ret.loop_state} -> {state}")
        now_closed = state == "closed" and ret.loop_state != "closed"
        ret.loop_state = state
        ret.loop_updated_at = _text(details.get("updated_at"), 40)
        _react_to_loop_state(ret, state)
        # Only a change needs a step (repeats must not pile up tasks); Loop finishing our
        # process call is what the close step waits for.
        if ret.state != before or (now_closed and ret.state == lc.LOOP_ACTIONED):
            _enqueue_next(ctx, s, ret)
        return ret.id


def _new_return(merchant: Merchant, details: dict, state: str) -> Return:
    return Return(
        merchant=merchant.name,
        loop_return_id=str(details["id"]),
        rma_external_ref=rma_ref(merchant.name, str(details["id"])),
        state=lc.RECEIVED,
        loop_state=state,
        # Cut to the columns' sizes: PostgreSQL refuses what SQLite would silently keep.
        order_name=_text(details.get("order_name"), 64),
        currency=_text(details.get("currency"), 8),
        total=str(money(details.get("total")))[:32],
        loop_created_at=_text(details.get("created_at"), 40),
        units=[unit_from_loop(item) for item in details.get("line_items") or []],
        # Kept only while `received` (lifecycle.transition): RLM needs where the parcel comes
        # from. None when nothing is known: create_rma then asks Loop.
        ship_from=details.get("ship_from") or ship_from(details.get("address")) or None,
    )


def _text(value, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def _react_to_loop_state(ret: Return, state: str) -> None:
    """What a Loop state we did not cause means for our side (workflow.md side paths)."""
    ours = ret.loop_action_claimed_at is not None
    if _our_call_finished_after_all(ret, state):
        ret.attention_reason = ret.attention_step = None
        lc.transition(ret, lc.LOOP_ACTIONED, f"Loop shows the return {state}",
                      f"our {ret.decision} call was done after all; the RMA will be closed")
        return
    if state in ("cancelled", "expired"):
        if ret.state in (lc.RECEIVED, lc.RMA_CREATED, lc.TRANSMITTED):
            lc.transition(ret, lc.CANCELLING, f"Loop return {state}", "cancel the RMA in RLM")
        elif ret.state in (lc.PARTIALLY_RECEIVED, lc.FULLY_RECEIVED, lc.DECIDED):
            lc.park(ret, None, f"Loop return {state} after goods were received in RLM "
                               f"(RA {ret.rma_number}); review by hand")
    elif state in ("closed", "review") and not ours:
        if ret.state in (lc.RECEIVED, lc.RMA_CREATED) or ret.state in lc.WAITING_FOR_GOODS \
                or ret.state == lc.DECIDED:
            ret.decision = "by_person"
            verb = "processed or closed" if state == "closed" else "flagged"
            lc.transition(ret, lc.LOOP_ACTIONED, f"{verb} by a person in Loop",
                          "no action of ours; the RMA will be closed")


def _our_call_finished_after_all(ret: Return, state: str) -> bool:
    """Parked at the Loop step after a process call was sent (its outcome unknown, or a
    processing failure reported, perhaps for an earlier attempt), and now Loop shows it done."""
    return (ret.state == lc.NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
            and ret.decision in ASYNC_ACTIONS and ret.loop_actioned_at is not None
            and state == LANDED_STATE[ret.decision])


# --- RMA creation ----------------------------------------------------------------------------
def create_rma(ctx: Context, return_id: int) -> None:
    snap = _snapshot(ctx, return_id)
    if snap is None or snap.state != lc.RECEIVED:
        return
    merchant = ctx.merchant(snap.merchant)
    # No Loop call here: the RA is built from what the webhook carried (creating it is
    # idempotent in RLM, and a later cancellation cancels it). RLM-only tasks never wait on
    # Loop's rate limit.
    rlm = ctx.rlm(merchant)
    groups = group_units(snap.units)
    if not groups:
        raise StepFailed("the Loop return has no line items")
    lines, unknown = [], []
    for number, group in enumerate(groups, start=1):
        resolved = _resolve(rlm, merchant, group)
        if resolved is None:
            unknown.append(f"{group.sku or '(no SKU)'} (barcode {group.barcode or 'none'})")
            continue
        code, text = reason_for(group, merchant.reason_code_for)
        lines.append(ra_line(number, group, resolved, code, text))
    if unknown:
        raise StepFailed("SKU unknown to RLM: " + ", ".join(unknown)
                         + "; no RMA created. Fix the catalog or SKU mapping, then retry.")
    address = snap.ship_from
    if address is None:
        # Cleared when the return was parked (or never carried): Loop still has it. A rare
        # call, so this RLM task waits on Loop's rate limit only after a retry.
        address = ship_from(ctx.loop(merchant).get_return(snap.loop_return_id).get("address"))
    try:
        details = {"id": snap.loop_return_id, "order_name": snap.order_name,
                   "created_at": snap.loop_created_at}
        ra, created = rlm.create_ra(build_ra(merchant, details, lines, address,
                                             external_ref=_ra_ref(snap)))
    except FinalError as exc:
        raise StepFailed(_rejection(exc, groups)) from None

    with _locked(ctx, return_id) as (s, ret):
        if ret is None:
            return
        ret.rma_number = ra["ra_number"]
        ret.rma_status = ra.get("status")
        ret.ship_from = None  # the shopper's address was needed only to create the RA
        ret.rma_lines = [_keep_line(line) for line in ra.get("lines") or lines]
        ret.expires_at = _expiry(ra, merchant, ctx.now())
        if ret.state != lc.RECEIVED:
            lc.note(ret, "RMA created while the return moved on", f"RA {ret.rma_number}")
            return
        target = lc.TRANSMITTED if ra.get("status") == "TRANSMITTED" else lc.RMA_CREATED
        verb = "created" if created else "found (create replayed)"
        lc.transition(ret, target, f"RMA {verb} in RLM", f"RA {ret.rma_number}, status {ra.get('status')}")
        if target == lc.TRANSMITTED:
            ret.transmitted_at = ctx.now()
            _decide_if_receipts_waiting(ctx, s, ret)
        _enqueue_next(ctx, s, ret)


def _resolve(rlm, merchant: Merchant, group) -> dict | None:
    for query in sku_candidates(group, merchant.sku_pattern):
        for item in rlm.find_items(**query):
            try:
                return item_fields(item, group)
            except LookupError:
                continue
    return None


def _rejection(exc: FinalError, groups) -> str:
    """RLM's own message, verbatim, plus the SKU of the line it names."""
    text = f"RLM rejected the RMA: {exc.message}"
    body = exc.body if isinstance(exc.body, dict) else {}
    number = body.get("line_number")
    if isinstance(number, int) and 1 <= number <= len(groups):
        text += f" (line {number}: SKU {groups[number - 1].sku})"
    return text


def _keep_line(line: dict) -> dict:
    keys = ("line_number", "sku_number", "style_number", "color", "size", "upc",
            "qty_authorized", "unit_price", "external_line_refs")
    return {k: line.get(k) for k in keys}


def _expiry(ra: dict, merchant: Merchant, now: datetime) -> datetime:
    """The merchant's expiry, or RLM's own expiration date if that comes first."""
    ours = now + timedelta(days=merchant.criteria.expiry_days)
    try:
        day = datetime.strptime(str(ra.get("expiration_date")), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return ours
    return min(ours, day + timedelta(days=1))  # RLM's date is inclusive


def transmit_rma(ctx: Context, return_id: int) -> None:
    snap = _snapshot(ctx, return_id)
    if snap is None or snap.state != lc.RMA_CREATED:
        return
    if snap.rma_number is None:  # cannot happen: RMA_CREATED is entered with the RA number
        raise StepFailed("no RA number stored for the created RMA")
    rlm = ctx.rlm(ctx.merchant(snap.merchant))
    try:
        result = rlm.transmit(snap.rma_number)
        detail = f"ASN {result.get('asn_number')}"
    except FinalError as exc:
        if exc.status != 409:
            raise StepFailed(f"RLM refused to transmit RA {snap.rma_number}: {exc.message}") from None
        # 409: maybe an earlier attempt (or RLM's auto-transmit) already did it.
        status = rlm.get_ra(snap.rma_number).get("status")
        if status in ("OPEN", "CLOSED", "CANCELLED"):
            raise StepFailed(f"RLM refused to transmit RA {snap.rma_number}: {exc.message}") from None
        detail = f"already {status} in RLM"
    with _locked(ctx, return_id) as (s, ret):
        if ret is None or ret.state != lc.RMA_CREATED:
            return
        ret.rma_status = "TRANSMITTED"
        ret.transmitted_at = ctx.now()
        lc.transition(ret, lc.TRANSMITTED, "RMA transmitted in RLM", detail)
        _decide_if_receipts_waiting(ctx, s, ret)


def _decide_if_receipts_waiting(ctx: Context, s: Session, ret: Return) -> None:
    """A fast warehouse's receipt may have been polled before the RA became `transmitted` here
    (the poll found no return waiting for it): look at it now rather than at the next sweep."""
    if receipts_for(s, ret.merchant, ret.rma_number):
        return_id = ret.id
        after_commit(s, lambda: ctx.enqueue("decide", return_id))


# --- receipts and the decision ---------------------------------------------------------------
def poll_receipts(ctx: Context, merchant_name: str, max_pages: int = 50) -> int:
    """One incremental pass over RLM's receipt feed; returns how many new receipts it stored."""
    merchant = ctx.merchant(merchant_name)
    rlm = ctx.rlm(merchant)
    with session_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "rlm_receipts"))
        cursor = row.cursor if row else None
    since = (ctx.now() - timedelta(days=ctx.settings.receipt_lookback_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stored = 0
    for _ in range(max_pages):
        page = rlm.receipt_page(cursor=cursor, updated_since=None if cursor else since)
        stored += _store_receipts(ctx, merchant, page)
        cursor = page.get("next_cursor") or cursor
        if not page.get("has_more"):
            break
    return stored


def _store_receipts(ctx: Context, merchant: Merchant, page: dict) -> int:
    new_ras: set[int] = set()
    added = 0
    with session_scope(ctx.sessions) as s:
        for r in page.get("data") or []:
            number = int(r["receipt_number"])
            exists = s.scalar(select(Receipt.id).where(Receipt.merchant == merchant.name,
                                                       Receipt.receipt_number == number))
            if exists:
                continue  # the feed is at-least-once
            s.add(Receipt(merchant=merchant.name, receipt_number=number, ra_number=int(r["ra_number"]),
                          received_at=r.get("received_at"), lines=r.get("lines") or []))
            new_ras.add(int(r["ra_number"]))
            added += 1
        row = s.get(FeedCursor, (merchant.name, "rlm_receipts"))
        if row is None:
            row = FeedCursor(merchant=merchant.name, feed="rlm_receipts")
            s.add(row)
        row.cursor = page.get("next_cursor") or row.cursor
        if new_ras:
            ids = s.scalars(select(Return.id).where(Return.merchant == merchant.name,
                                                    Return.rma_number.in_(new_ras))).all()
            for i in ids:
                after_commit(s, partial(ctx.enqueue, "decide", i))
    return added


def decide(ctx: Context, return_id: int) -> None:
    """Bring the receiving state up to date and, when it is time, decide process or flag."""
    merchant = None
    with _locked(ctx, return_id) as (s, ret):
        if ret is None or ret.state not in lc.WAITING_FOR_GOODS:
            return
        merchant = ctx.merchant(ret.merchant)
        stored = receipts_for(s, ret.merchant, ret.rma_number)
        receipts = [{"lines": r.lines, "received_at": r.received_at} for r in stored]
        ret.receipts_seen_at = max((r.stored_at for r in stored), default=ret.receipts_seen_at)
        _advance_receiving(ret, receipts)
        decision = rules.decide(
            ret.rma_lines, receipts, merchant.criteria, now=ctx.now(),
            first_receipt_at=as_utc(ret.first_receipt_at), expires_at=as_utc(ret.expires_at),
            return_total=money(ret.total) if ret.total else None)
        if decision.action == rules.WAIT:
            return
        ret.decision = decision.action
        detail = decision.as_dict()
        detail["inputs"] = {"receipts": len(receipts), "rma_lines": len(ret.rma_lines)}
        if decision.action == rules.FLAG:
            ret.loop_note = flag_note(ret.rma_number, [d.text for d in decision.discrepancies])
            detail["note_posted"] = False
        ret.decision_detail = detail
        why = ", ".join(decision.rules) if decision.rules else "all units received in accepted condition"
        lc.transition(ret, lc.DECIDED, f"decision: {decision.action}", f"{why}: {decision.summary}")
        _enqueue_next(ctx, s, ret)


def _advance_receiving(ret: Return, receipts: list[dict]) -> None:
    progress = rules.receipt_progress(ret.rma_lines, receipts)
    if progress == "none":
        return
    if ret.first_receipt_at is None:
        stamps = [parse_loop_time(r.get("received_at")) for r in receipts]
        ret.first_receipt_at = min((t for t in stamps if t), default=None) or datetime.now(UTC)
    target = lc.FULLY_RECEIVED if progress == "complete" else lc.PARTIALLY_RECEIVED
    if target != ret.state and not (ret.state == lc.FULLY_RECEIVED and target == lc.PARTIALLY_RECEIVED):
        lc.transition(ret, target, "receipt posted in RLM", f"{len(receipts)} receipt(s)")


# --- the Loop action -------------------------------------------------------------------------
def act_in_loop(ctx: Context, return_id: int) -> None:
    """Send the decision to Loop, at most once per return unless a person confirms a re-send.

    Process and remove-and-process are not idempotent and Loop only queues them: once such a
    call may have reached Loop (its request left, whatever came back), it is never sent again
    on our own. The return then waits for Loop to show the outcome (close_rma, on a schedule).
    Flag and close are harmless to repeat: after an unclear answer they are sent again if Loop,
    re-read after the settle time, shows they did not land.
    """
    snap = _snapshot(ctx, return_id)
    if snap is None or snap.state != lc.DECIDED:
        return
    merchant = ctx.merchant(snap.merchant)
    loop = ctx.loop(merchant)
    action = snap.decision
    if action is None:  # cannot happen: DECIDED is entered with the decision
        raise StepFailed("no decision stored for the decided return")
    claimed = snap.loop_action_claimed_at
    if action in ASYNC_ACTIONS and snap.loop_call_sent_at is not None:
        # An earlier attempt sent the call and stopped before recording the answer (a worker
        # killed mid-call): it may be queued in Loop. Wait for the outcome, never re-send.
        return _after_call(ctx, loop, merchant, snap, accepted=False, sent_now=False)
    details = loop.get_return(snap.loop_return_id)
    state = loop_state(details.get("state"))

    # Ours landed (for a process call: one sent earlier, before an operator's retry).
    if claimed is not None and state == LANDED_STATE.get(action) \
            and (action not in ASYNC_ACTIONS or snap.loop_actioned_at is not None):
        return _after_call(ctx, loop, merchant, snap, accepted=True, sent_now=False, loop_shows=state)
    if state != "open":
        if claimed is not None:
            _release(ctx, return_id, claimed)  # ours did not land: whatever happened was not us
        cause = "Loop state re-read before acting" if claimed is None else "Loop state changed while we acted"
        ingest_return(ctx, merchant, details, cause=cause)
        return
    if claimed is None:
        claim = _claim(ctx, return_id)
    else:
        age = (ctx.now() - as_utc(claimed)).total_seconds()
        if age < settle_s(ctx):
            # An earlier call may still be under way (or waiting for a rate-limit slot).
            raise RetryableError("loop", "waiting to see whether the earlier call landed",
                                 retry_after=settle_s(ctx) - age)
        # It did not land (or never left). Re-claim first: of two workers, only one sends.
        claim = _claim(ctx, return_id, expected=claimed)
    if claim is None:
        return
    accepted = _call_action(ctx, loop, snap, action, return_id, claim)
    _after_call(ctx, loop, merchant, snap, accepted=accepted, sent_now=True)


def _after_call(ctx: Context, loop, merchant: Merchant, snap: Return, *, accepted: bool,
                sent_now: bool, loop_shows: str | None = None) -> None:
    """Record that the action was sent (`accepted`: Loop said so) and move on: a flag gets its
    note, a process call waits for Loop's outcome, anything else closes the RMA next."""
    action = snap.decision or ""
    if action == rules.FLAG:
        _post_note_once(loop, snap, check_existing=not sent_now)
    graded = _grade(ctx, loop, merchant, snap)
    with _locked(ctx, snap.id) as (s, ret):
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
        if action in ASYNC_ACTIONS and ret.loop_state != "closed":
            # The close step waits for `return.closed` (or a processing failure), and reads
            # Loop on this schedule should neither webhook come.
            first = outcome_checks(ctx, ret.loop_actioned_at, now)
            lc.wait_for(ret, lc.LOOP_OUTCOME, first, _outcome_deadline(ctx, ret))
        else:
            _enqueue_next(ctx, s, ret)


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
    """Mark that we are about to act, so no other worker (or retry) acts blindly again.

    Succeeds only if the claim is still `expected` (None: unclaimed); returns the new claim.
    A new claim starts with nothing sent.
    """
    now = ctx.now()
    return now if _swap_claim(ctx, return_id, expected, now) else None


def _release(ctx: Context, return_id: int, claim: datetime) -> None:
    _swap_claim(ctx, return_id, claim, None)


def _swap_claim(ctx: Context, return_id: int, expected: datetime | None, new: datetime | None) -> bool:
    """Compare-and-set on the claim, under the row lock."""
    with _locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state != lc.DECIDED or as_utc(ret.loop_action_claimed_at) != as_utc(expected):
            return False
        ret.loop_action_claimed_at = new
        ret.loop_call_sent_at = None
        return True


def _mark_sent(ctx: Context, return_id: int, claim: datetime) -> None:
    """Runs just before the request leaves (a rate-limit slot is ours). If another worker took
    the claim meanwhile, stop here: nothing has been sent."""
    with _locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state != lc.DECIDED or as_utc(ret.loop_action_claimed_at) != as_utc(claim):
            raise _Superseded()
        ret.loop_call_sent_at = ctx.now()


def _call_action(ctx: Context, loop, snap: Return, action: str, return_id: int,
                 claim: datetime) -> bool:
    """Send the action once. True: Loop accepted it. False: a process / remove call whose answer
    was lost after it may have reached Loop (never re-sent on our own). A clear refusal, or a
    call that never left, raises."""
    try:
        _send_action(loop, snap, action, on_send=lambda: _mark_sent(ctx, return_id, claim))
    except NotSent:
        _release(ctx, return_id, claim)  # nothing happened in Loop: the retry starts afresh
        raise
    except FinalError as exc:
        # Refused: perhaps a person acted in the meantime. Loop's state tells.
        details = loop.get_return(snap.loop_return_id)
        if loop_state(details.get("state")) != "open":
            _release(ctx, return_id, claim)
            ingest_return(ctx, ctx.merchant(snap.merchant), details,
                          cause=f"Loop refused {action} ({exc.code or exc.message})")
            raise _Superseded() from None
        raise StepFailed(f"Loop refused to {action} the return: {exc.message} ({exc.code})") from None
    except RetryableError:
        if action in ASYNC_ACTIONS:
            return False
        raise  # flag / close: re-read after the settle time, sent again if it did not land
    return True


def _send_action(loop, snap: Return, action: str, on_send) -> None:
    if action == rules.PROCESS:
        loop.process(snap.loop_return_id, {"rlm_ra_number": str(snap.rma_number)}, on_send=on_send)
    elif action == rules.FLAG:
        loop.flag(snap.loop_return_id, on_send=on_send)
    elif action == rules.REMOVE_AND_PROCESS:
        loop.remove_items(snap.loop_return_id, (snap.decision_detail or {}).get("remove_line_item_ids", []),
                          on_send=on_send)
    elif action == rules.CLOSE:
        loop.close(snap.loop_return_id, on_send=on_send)
    else:
        raise StepFailed(f"unknown decision {action!r}")


class _Superseded(Exception):
    """The return moved on while this step ran; nothing more to do here."""


def _grade(ctx: Context, loop, merchant: Merchant, snap: Return) -> str | None:
    """Optionally tell Loop what condition each unit arrived in. Best effort: grading informs
    the merchant's team and must never hold up the return itself."""
    if not merchant.criteria.grade_in_loop or snap.decision not in (rules.PROCESS, rules.FLAG,
                                                                    rules.REMOVE_AND_PROCESS):
        return None
    with session_scope(ctx.sessions) as s:
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


# --- closing and cancelling the RMA ----------------------------------------------------------
def close_rma(ctx: Context, return_id: int) -> None:
    snap = _snapshot(ctx, return_id)
    if snap is None or snap.state not in (lc.LOOP_ACTIONED, lc.RMA_CLOSED):
        return
    detail = "RA already closed"
    if snap.state == lc.LOOP_ACTIONED:
        if snap.decision in ASYNC_ACTIONS and not _loop_finished_processing(ctx, snap):
            return
        rlm = ctx.rlm(ctx.merchant(snap.merchant))
        ra = _find_ra(rlm, snap)
        reason = CLOSE_REASON.get(snap.decision or "", "MANUAL")
        if ra is None:
            detail = "no RMA existed in RLM"
        elif ra["status"] == "OPEN":  # RLM closes only transmitted RAs; an untransmitted one is cancelled
            detail = _finish_ra(rlm, ra, lambda n: rlm.cancel(n), "cancelled (never transmitted)")
        elif ra["status"] in ("TRANSMITTED", "PARTIALLY_RECEIVED", "RECEIVED"):
            note = (snap.loop_note or snap.decision or "")[:250]
            detail = _finish_ra(rlm, ra, lambda n: rlm.close(n, reason, note), f"closed: {reason}")
        else:
            detail = f"RA {ra['ra_number']} already {ra['status']}"
    with _locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state not in (lc.LOOP_ACTIONED, lc.RMA_CLOSED):
            return
        if ret.state == lc.LOOP_ACTIONED:
            lc.transition(ret, lc.RMA_CLOSED, "RMA resolved in RLM", detail)
        lc.transition(ret, lc.COMPLETE, "return complete")


def cancel_rma(ctx: Context, return_id: int) -> None:
    snap = _snapshot(ctx, return_id)
    if snap is None or snap.state != lc.CANCELLING:
        return
    rlm = ctx.rlm(ctx.merchant(snap.merchant))
    ra = _find_ra(rlm, snap)
    if ra is None:
        detail = "no RMA existed in RLM"
    elif ra["status"] in ("OPEN", "TRANSMITTED"):
        detail = _finish_ra(rlm, ra, lambda n: rlm.cancel(n), "cancelled")
    elif ra["status"] in ("CANCELLED", "CLOSED"):
        detail = f"RA {ra['ra_number']} already {ra['status']}"
    else:
        raise StepFailed(f"Loop return cancelled but RLM has received goods against RA "
                         f"{ra['ra_number']} ({ra['status']}); review by hand")
    with _locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state != lc.CANCELLING:
            return
        if ra is not None:
            ret.rma_number, ret.rma_status = ra["ra_number"], "CANCELLED"
        lc.transition(ret, lc.CANCELLED, "RMA cancelled in RLM", detail)


def _loop_finished_processing(ctx: Context, snap: Return) -> bool:
    """Whether Loop shows our process call done, so the RMA can be closed.

    Loop processes in the background and tells us by `return.closed` (or by
    `return.processing.failed`, which parks the return). Should neither come, Loop is read on
    the return's schedule (outcome_checks); past the window a person decides, as the call may
    never have reached Loop, or Loop may still be working on it.
    """
    if snap.loop_state == "closed":  # Loop's webhook told us
        return True
    due = as_utc(snap.next_check_at)
    if due is not None and ctx.now() < due:
        return False  # a repeated message: the sweeper brings the return back when it is due
    details = ctx.loop(ctx.merchant(snap.merchant)).get_return(snap.loop_return_id)
    state = loop_state(details.get("state"))
    if state == "closed":
        return True
    now = ctx.now()
    with _locked(ctx, snap.id) as (_, ret):
        if ret is None or ret.state != lc.LOOP_ACTIONED:
            return False
        deadline = as_utc(ret.wait_deadline) or _outcome_deadline(ctx, ret)
        if state != "open":
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
            lc.wait_for(ret, lc.LOOP_OUTCOME, min(deadline, outcome_checks(ctx, as_utc(ret.loop_actioned_at) or now, now)),
                        deadline)
    return False


def _finish_ra(rlm, ra: dict, action, done: str) -> str:
    """Close or cancel an RA; a 409 from a concurrent or earlier attempt that already ended it
    is success, anything else a refusal to report."""
    number = ra["ra_number"]
    try:
        action(number)
        return f"RA {number} {done}"
    except FinalError as exc:
        if exc.status == 409:
            status = rlm.get_ra(number).get("status")
            if status in ("CLOSED", "CANCELLED"):
                return f"RA {number} already {status}"
            raise StepFailed(f"RLM refused: {exc.message} (RA {number} is {status})") from None
        raise StepFailed(f"RLM refused RA {number}: {exc.message}") from None


def _find_ra(rlm, snap: Return) -> dict | None:
    if snap.rma_number:
        return rlm.get_ra(snap.rma_number)
    # The RMA may exist even though we never recorded it (a create that raced a cancel).
    return rlm.find_ra(_ra_ref(snap))


def _ra_ref(snap: Return) -> str:
    # Returns stored before refs were scoped carry the bare Loop id (migration 0003).
    return snap.rma_external_ref or rma_ref(snap.merchant, snap.loop_return_id)


# --- steps by name, for the task layer -------------------------------------------------------
STEPS = {
    "create_rma": create_rma,
    "transmit_rma": transmit_rma,
    "decide": decide,
    "act_in_loop": act_in_loop,
    "close_rma": close_rma,
    "cancel_rma": cancel_rma,
}


def run_step(ctx: Context, step: str, return_id: int) -> None:
    """Run one step; a final failure parks the return (retryable errors propagate)."""
    try:
        STEPS[step](ctx, return_id)
    except _Superseded:
        return
    except StepFailed as exc:
        park_return(ctx, return_id, step, str(exc))
    except FinalError as exc:
        park_return(ctx, return_id, step, f"{exc.system.upper()} answered {exc.status}: {exc.message}")
