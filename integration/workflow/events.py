"""Loop's news: a stored webhook handled (handle_event), and any report of a return (a webhook
or the reconciliation pull) recorded through one path (ingest_return)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import undefer

from integration.errors import NoSlot, NotFound
from integration.infra import logs
from integration.loop.webhooks import HANDLED_TOPICS, InvalidEvent, read_body
from integration.loop.webhooks import dedupe_key as event_key
from integration.merchants import Merchant
from integration.store.db import after_commit, read_scope, session_scope
from integration.store.models import OPEN_EVENTS, InboxStatus, Return, WebhookEvent
from integration.store.retention import finish_event
from integration.store.status import find_return, lock_return
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.mapping import money, rma_ref, ship_from, unit_from_loop
from integration.workflow.runner import schedule, slot_horizon_s


def handle_event(ctx: Context, event_id: int) -> None:
    try:
        claimed = _claim(ctx, event_id)
    except IntegrityError:  # its event key is taken: the same event, stored in other bytes
        return _finish_duplicate(ctx, event_id)
    if claimed is None:
        return
    merchant_name, payload = claimed
    # Read only now (the receiver stores bodies unread): every line from here names the return.
    with logs.bound(merchant=merchant_name, loop_return_id=payload.get("loop_return_id")):
        _handle(ctx, event_id, merchant_name, payload)


def _handle(ctx: Context, event_id: int, merchant_name: str, payload: dict) -> None:
    topic = payload.get("topic")
    merchant = ctx.merchants.get(merchant_name)
    if merchant is None:
        return _finish_event(ctx, event_id, InboxStatus.FAILED, f"unknown merchant {merchant_name}")
    if topic == "return.processing":
        _processing_failed(ctx, merchant, payload)
    elif topic == "return":
        try:
            _return_event(ctx, merchant, payload)
        except NotFound:
            return _finish_event(ctx, event_id, InboxStatus.FAILED, "Loop does not know this return")
        except NoSlot as exc:  # no Loop token for the re-read now: come back, holding no slot
            return _defer_event(ctx, event_id, exc.retry_after or 1.0)
    else:
        return _finish_event(ctx, event_id, InboxStatus.IGNORED, f"topic {topic} is not acted on")
    _finish_event(ctx, event_id, InboxStatus.DONE, None)


def _claim(ctx: Context, event_id: int) -> tuple[str, dict] | None:
    """Take the row (its lease), reading its raw body first if it still has one: (merchant,
    event) to act on, or None when there is nothing to do. IntegrityError: the event's key is
    another row's, committed or committing (the unique constraint settles a race between two
    workers on SQLite and PostgreSQL alike)."""
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id, with_for_update=True, options=[undefer(WebhookEvent.raw_body)])
        if ev is None or ev.status not in OPEN_EVENTS:
            return None
        ev.status, ev.attempts = InboxStatus.PROCESSING, ev.attempts + 1
        ev.next_attempt_at = ctx.now() + timedelta(seconds=ctx.settings.stuck_after_s)  # its lease
        if ev.raw_body is not None:
            raw = ev.raw_body
            try:
                event = read_body(raw)
            except InvalidEvent as exc:
                # Kept for inspection without its body (it may hold shopper data).
                finish_event(ev, InboxStatus.INVALID, str(exc))
                return None
            _describe(ev, event)
            ev.payload, ev.event_key, ev.raw_body = event, event_key(event, raw), None
            if event["topic"] not in HANDLED_TOPICS:
                finish_event(ev, InboxStatus.IGNORED, f"topic {event['topic']} is not acted on")
                return None
            s.flush()  # the event key's unique constraint: raises here if another row has it
        return ev.merchant, dict(ev.payload or {})


def _describe(ev: WebhookEvent, event: dict) -> None:
    ev.topic, ev.trigger, ev.loop_return_id = event["topic"], event["trigger"], event["loop_return_id"]


def _finish_duplicate(ctx: Context, event_id: int) -> None:
    """A copy of an event another row holds: nothing of it is kept but what it was."""
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id, with_for_update=True, options=[undefer(WebhookEvent.raw_body)])
        if ev is None or ev.status not in OPEN_EVENTS or ev.raw_body is None:
            return
        raw = ev.raw_body
        event = read_body(raw)  # it was read before the conflict: usable
        original = s.scalar(select(WebhookEvent.id).where(WebhookEvent.merchant == ev.merchant,
                                                          WebhookEvent.event_key == event_key(event, raw)))
        _describe(ev, event)
        ev.payload = None
        finish_event(ev, InboxStatus.DUPLICATE, f"the same event as delivery {original}")


def _return_event(ctx: Context, merchant: Merchant, payload: dict) -> None:
    """Record a `return.*` webhook, re-reading Loop only when its state could change our course.

    Webhooks arrive late and out of order, so a payload's state is trusted only where it cannot
    mislead: a new return's creation (its line items are what the RMA is built from; a later
    cancellation still cancels the RMA), or a non-open state for a return whose course no Loop
    change alters any more.
    """
    loop_id, trigger = payload["loop_return_id"], payload["trigger"]
    cause = f"webhook {trigger}"
    state = lc.LoopState.of(payload.get("state"))
    with read_scope(ctx.sessions) as s:
        ret = find_return(s, merchant.name, loop_id)
        known = None if ret is None else (ret.state, ret.loop_action_claimed_at is not None)
    as_details = {**payload, "id": loop_id}
    if known is None and trigger == "return.created" and state == lc.LoopState.OPEN:
        ingest_return(ctx, merchant, as_details, cause)
    elif known is not None and trigger == "return.created":
        return  # a late creation notice says nothing we do not know
    elif known is not None and not _reacts_to_loop(*known) and state not in ("", lc.LoopState.OPEN):
        ingest_return(ctx, merchant, as_details, cause)
    else:
        ingest_return(ctx, merchant, ctx.loop(merchant).get_return(loop_id), cause)


def _reacts_to_loop(state: str, claimed: bool) -> bool:
    """Whether a Loop state change can still alter what we do with a return in `state`."""
    return state in (lc.RECEIVED, lc.RMA_CREATED, lc.SHADOW_DECIDED) or state in lc.WAITING_FOR_GOODS \
        or (state == lc.DECIDED and not claimed)


def _finish_event(ctx: Context, event_id: int, status: InboxStatus, error: str | None) -> None:
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id)
        if ev is not None:
            finish_event(ev, status, error)


def _defer_event(ctx: Context, event_id: int, wait_s: float) -> None:
    """Handle the row again once its merchant has a Loop token: published with that delay if
    soon, else left for the sweeper at its due time. Our own limit's refusal is no attempt."""
    delayed = ctx.enqueue_in is not None and wait_s <= slot_horizon_s(ctx)
    with session_scope(ctx.sessions) as s:
        ev = s.get(WebhookEvent, event_id, with_for_update=True)
        if ev is None or ev.status != InboxStatus.PROCESSING:
            return
        ev.status, ev.attempts = InboxStatus.RECEIVED, max(0, ev.attempts - 1)
        ev.next_attempt_at = ctx.now() + timedelta(
            seconds=wait_s + (ctx.settings.stuck_after_s if delayed else 0.0))
        if delayed and ctx.enqueue_in is not None:
            enqueue_in = ctx.enqueue_in
            after_commit(s, lambda: enqueue_in("handle_event", event_id, wait_s))


def fail_event(ctx: Context, event_id: int, error: str) -> None:
    _finish_event(ctx, event_id, InboxStatus.FAILED, error[:2000])


def _processing_failed(ctx: Context, merchant: Merchant, payload: dict) -> None:
    with session_scope(ctx.sessions) as s:
        ret = find_return(s, merchant.name, payload["loop_return_id"])
        if ret is None:
            return
        message = payload.get("message") or "no message"
        lc.on_processing_failed(ret, f"Loop could not process the return: {message} "
                                     f"(source {payload.get('source')})")


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
    state = lc.LoopState.of(details.get("state"))
    with session_scope(ctx.sessions) as s:
        ret = lock_return(s, merchant.name, loop_id)
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
        now_closed = state == lc.LoopState.CLOSED and ret.loop_state != lc.LoopState.CLOSED
        ret.loop_state = state
        ret.loop_updated_at = _text(details.get("updated_at"), 40)
        lc.on_loop_state(ret, state)
        # Only a change needs a step (repeats must not pile up tasks); Loop finishing our
        # process call is what the close step waits for.
        if ret.state != before or (now_closed and ret.state == lc.LOOP_ACTIONED):
            schedule(ctx, s, ret)
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
