"""The RMA in RLM: created and transmitted when the return arrives, closed once Loop has the
outcome, cancelled if Loop cancels the return."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from integration.errors import FinalError, StepFailed
from integration.merchants import Merchant
from integration.rlm.client import RaStatus
from integration.store.models import Return, receipts_for
from integration.workflow import lifecycle as lc
from integration.workflow import rules
from integration.workflow.loop_action import loop_finished_processing
from integration.workflow.mapping import (
    build_ra,
    group_units,
    item_fields,
    ra_line,
    reason_for,
    rma_ref,
    ship_from,
    sku_candidates,
)
from integration.workflow.runner import ANY_STATE, StepRun, schedule, send_step, step

CLOSE_REASON = {
    rules.PROCESS: "LOOP_PROCESSED",
    rules.REMOVE_AND_PROCESS: "LOOP_PROCESSED",
    rules.FLAG: "LOOP_FLAG_RESOLVED",
    rules.CLOSE: "EXPIRED",
    "by_person": "MANUAL",
}


@step(requires={lc.RECEIVED})
def create_rma(run: StepRun) -> None:
    ctx, snap = run.ctx, run.snap
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
        resolved = resolve_group(rlm, merchant, group)
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

    with run.locked(ANY_STATE) as (s, ret):
        ret.rma_number = ra["ra_number"]
        ret.rma_status = ra.get("status")
        ret.ship_from = None  # the shopper's address was needed only to create the RA
        ret.rma_lines = [_keep_line(line) for line in ra.get("lines") or lines]
        ret.expires_at = _expiry(ra, merchant, ctx.now())
        if ret.state != lc.RECEIVED:
            lc.note(ret, "RMA created while the return moved on", f"RA {ret.rma_number}")
            return
        target = lc.TRANSMITTED if ra.get("status") == RaStatus.TRANSMITTED else lc.RMA_CREATED
        verb = "created" if created else "found (create replayed)"
        lc.transition(ret, target, f"RMA {verb} in RLM", f"RA {ret.rma_number}, status {ra.get('status')}")
        if target == lc.TRANSMITTED:
            ret.transmitted_at = ctx.now()
        schedule(ctx, s, ret)
        _decide_if_receipts_waiting(run, s, ret)


def resolve_group(rlm, merchant: Merchant, group) -> dict | None:
    """RA line fields for a group of units from RLM's catalog, or None (also `merchants check`)."""
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


@step(requires={lc.RMA_CREATED})
def transmit_rma(run: StepRun) -> None:
    ctx, snap = run.ctx, run.snap
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
        if status in (RaStatus.OPEN, RaStatus.CLOSED, RaStatus.CANCELLED):
            raise StepFailed(f"RLM refused to transmit RA {snap.rma_number}: {exc.message}") from None
        detail = f"already {status} in RLM"
    with run.locked() as (s, ret):
        ret.rma_status = RaStatus.TRANSMITTED
        ret.transmitted_at = ctx.now()
        lc.transition(ret, lc.TRANSMITTED, "RMA transmitted in RLM", detail)
        schedule(ctx, s, ret)
        _decide_if_receipts_waiting(run, s, ret)


def _decide_if_receipts_waiting(run: StepRun, s, ret: Return) -> None:
    """A fast warehouse's receipt may have been polled before the RA became `transmitted` here
    (the poll found no return waiting for it): look at it now rather than at the grace's end."""
    if ret.state in lc.WAITING_FOR_GOODS and receipts_for(s, ret.merchant, ret.rma_number):
        send_step(run.ctx, s, ret, "decide")


@step(requires={lc.LOOP_ACTIONED, lc.RMA_CLOSED})
def close_rma(run: StepRun) -> None:
    """Close the RA once Loop has the outcome (for a process call: once Loop shows the return
    closed, read on the return's schedule), then complete the return."""
    ctx, snap = run.ctx, run.snap
    detail = "RA already closed"
    if snap.state == lc.LOOP_ACTIONED:
        by_person = snap.shadow_decided_at is not None  # shadow mode: a person acted, not us
        if snap.decision in lc.ASYNC_ACTIONS and not by_person and not loop_finished_processing(run):
            return
        rlm = ctx.rlm(ctx.merchant(snap.merchant))
        ra = _find_ra(rlm, snap)
        reason = "MANUAL" if by_person else CLOSE_REASON.get(snap.decision or "", "MANUAL")
        if ra is None:
            detail = "no RMA existed in RLM"
        elif ra["status"] == RaStatus.OPEN:  # RLM closes only transmitted RAs: cancel an untransmitted one
            detail = _finish_ra(rlm, ra, lambda n: rlm.cancel(n), "cancelled (never transmitted)")
        elif ra["status"] in (RaStatus.TRANSMITTED, RaStatus.PARTIALLY_RECEIVED, RaStatus.RECEIVED):
            note = ("by_person" if by_person else snap.loop_note or snap.decision or "")[:250]
            detail = _finish_ra(rlm, ra, lambda n: rlm.close(n, reason, note), f"closed: {reason}")
        else:
            detail = f"RA {ra['ra_number']} already {ra['status']}"
    with run.locked() as (_, ret):
        if ret.state == lc.LOOP_ACTIONED:
            lc.transition(ret, lc.RMA_CLOSED, "RMA resolved in RLM", detail)
        lc.transition(ret, lc.COMPLETE, "return complete")


@step(requires={lc.CANCELLING})
def cancel_rma(run: StepRun) -> None:
    ctx, snap = run.ctx, run.snap
    rlm = ctx.rlm(ctx.merchant(snap.merchant))
    ra = _find_ra(rlm, snap)
    if ra is None:
        detail = "no RMA existed in RLM"
    elif ra["status"] in (RaStatus.OPEN, RaStatus.TRANSMITTED):
        detail = _finish_ra(rlm, ra, lambda n: rlm.cancel(n), "cancelled")
    elif ra["status"] in (RaStatus.CANCELLED, RaStatus.CLOSED):
        detail = f"RA {ra['ra_number']} already {ra['status']}"
    else:
        raise StepFailed(f"Loop return cancelled but RLM has received goods against RA "
                         f"{ra['ra_number']} ({ra['status']}); review by hand")
    with run.locked() as (_, ret):
        if ra is not None:
            ret.rma_number, ret.rma_status = ra["ra_number"], RaStatus.CANCELLED
        lc.transition(ret, lc.CANCELLED, "RMA cancelled in RLM", detail)


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
            if status in (RaStatus.CLOSED, RaStatus.CANCELLED):
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
