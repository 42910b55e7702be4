"""What the warehouse received: RLM's receipt feed polled, and the decision made from it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from integration.merchants import Merchant
from integration.store.db import read_scope, session_scope
from integration.store.models import FeedCursor, Receipt, Return, receipts_for
from integration.workflow import lifecycle as lc
from integration.workflow import rules, shadow
from integration.workflow.context import Context
from integration.workflow.mapping import money, parse_loop_time
from integration.workflow.notes import flag_note
from integration.workflow.runner import StepRun, as_utc, enqueue_after_commit, schedule, step


def poll_receipts(ctx: Context, merchant_name: str, max_pages: int = 50) -> int:
    """One incremental pass over RLM's receipt feed; returns how many new receipts it stored."""
    merchant = ctx.merchant(merchant_name)
    rlm = ctx.rlm(merchant)
    with read_scope(ctx.sessions) as s:
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
            _decide_soon(ctx, s, merchant.name, new_ras)
    return added


def _decide_soon(ctx: Context, s, merchant: str, ras: set[int]) -> None:
    """Send decide for the returns waiting on these RAs, in the same transaction as their
    receipts, with a lease on each: should the message be lost, the sweeper sends it again."""
    ids = s.scalars(select(Return.id).where(Return.merchant == merchant, Return.rma_number.in_(ras),
                                            Return.state.in_(lc.WAITING_FOR_GOODS))).all()
    if not ids:
        return  # none waiting yet: transmit_rma looks for receipts when the RA gets there
    lease = ctx.now() + timedelta(seconds=ctx.settings.stuck_after_s)
    # One statement for the batch (a version bump keeps the optimistic lock honest).
    s.execute(update(Return).where(Return.id.in_(ids))
              .values(waiting_for=lc.Wait.STEP, next_attempt_at=lease, version=Return.version + 1)
              .execution_options(synchronize_session=False))
    for return_id in ids:
        enqueue_after_commit(ctx, s, "decide", return_id)


@step(requires=lc.WAITING_FOR_GOODS)
def decide(run: StepRun) -> None:
    """Bring the receiving state up to date and, when it is time, decide process or flag."""
    ctx = run.ctx
    with run.locked() as (s, ret):
        merchant = ctx.merchant(ret.merchant)
        stored = receipts_for(s, ret.merchant, ret.rma_number)
        receipts = [{"lines": r.lines, "received_at": r.received_at} for r in stored]
        _advance_receiving(ret, receipts)
        decision = rules.decide(
            ret.rma_lines, receipts, merchant.criteria, now=ctx.now(),
            first_receipt_at=as_utc(ret.first_receipt_at), expires_at=as_utc(ret.expires_at),
            return_total=money(ret.total) if ret.total else None)
        if decision.action == rules.WAIT:
            schedule(ctx, s, ret)  # until the grace or the expiry, or the next receipt
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
        if shadow.decides_in_shadow(merchant, ret):
            shadow.hold(ret, ctx.now())  # recorded, never sent: fixed now, whatever the mode later
        schedule(ctx, s, ret)


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
