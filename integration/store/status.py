"""What happened to return X: one JSON-ready view, for the API and the CLI."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.store.models import Return, receipts_for


def _by_loop_id(merchant: str, loop_return_id: str):
    return select(Return).where(Return.merchant == merchant, Return.loop_return_id == str(loop_return_id))


def find_return(session: Session, merchant: str, loop_return_id: str) -> Return | None:
    """A merchant's return by its Loop id (the unique key)."""
    return session.scalar(_by_loop_id(merchant, loop_return_id))


def lock_return(session: Session, merchant: str, loop_return_id: str) -> Return | None:
    """The same, locked for update until the transaction ends."""
    return session.scalar(_by_loop_id(merchant, loop_return_id).with_for_update())


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _at(value) -> str:
    return f"{value.isoformat()[:19]} UTC" if value is not None else "no time set"


# What each kind of wait (workflow.lifecycle.Wait) means, for a person reading the status.
_WAITS = {
    "step": lambda r: f"its next step to run (sent; sent again if it has not run by {_at(r.next_attempt_at)})",
    "goods": lambda r: f"the warehouse (decided by {_at(r.next_attempt_at)} whatever else arrives)",
    "loop_outcome": lambda r: (f"Loop to show the outcome of our call (next look {_at(r.next_attempt_at)}; "
                               f"parked for a person if nothing by {_at(r.wait_deadline)})"),
    "person": lambda r: "a person (needs attention)",
    "person_in_loop": lambda r: "a person to act in Loop (shadow mode: our decision was not sent)",
}


def waiting_text(ret: Return) -> str | None:
    describe = _WAITS.get(ret.waiting_for or "")
    return describe(ret) if describe else ret.waiting_for


def return_view(ret: Return) -> dict:
    session = Session.object_session(ret)
    receipts = [] if session is None else [
        {"receipt_number": r.receipt_number, "received_at": r.received_at, "lines": r.lines}
        for r in receipts_for(session, ret.merchant, ret.rma_number)]
    detail = ret.decision_detail or {}
    return {
        "merchant": ret.merchant,
        "loop_return_id": ret.loop_return_id,
        "state": ret.state,
        "loop_state": ret.loop_state,
        "order_name": ret.order_name,
        "rma_number": ret.rma_number,
        "rma_lines": ret.rma_lines,
        "receipts": receipts,
        "decision": {
            "action": ret.decision,
            "rules_fired": detail.get("rules", []),
            "reasons": [d["text"] for d in detail.get("discrepancies", [])],
            "summary": detail.get("summary"),
            "loop_note": ret.loop_note,
        } if ret.decision else None,
        "shadow": {"decided_at": _iso(ret.shadow_decided_at), "would": ret.decision,
                   "person_action": ret.person_action, "person_acted_at": _iso(ret.person_acted_at),
                   } if ret.shadow_decided_at else None,
        "attention_reason": ret.attention_reason,
        "waiting": {"for": ret.waiting_for, "next_attempt_at": _iso(ret.next_attempt_at),
                    "until": _iso(ret.wait_deadline), "text": waiting_text(ret)} if ret.waiting_for else None,
        "created_at": _iso(ret.created_at),
        "updated_at": _iso(ret.updated_at),
        "timeline": [
            {"at": _iso(t.at), "from": t.from_state, "to": t.to_state, "cause": t.cause,
             "detail": t.detail}
            for t in ret.timeline
        ],
    }
