"""Stored webhook deliveries an operator may have to look at: failed (gave up, or Loop did not
know the return) and invalid (stored for inspection only), newest first, a page at a time.

Keyset paging on (received_at desc, id desc): a page's `next_cursor` names its last row, and the
next page starts strictly after it, so rows arriving meanwhile never shift a page. The cursor is
opaque to its users (url-safe text); one that does not decode is a ValueError. Rows never carry a
webhook's body: only ids, statuses and the error text, scrubbed of anything like an email.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from integration.infra.scrub import scrub_text
from integration.ops.paging import Cursor
from integration.store.models import InboxStatus, WebhookEvent
from integration.workflow.runner import as_utc

PROBLEMS = (InboxStatus.FAILED, InboxStatus.INVALID)  # the default filter
MAX_LIMIT = 500
ERROR_CHARS = 300  # of last_error, in a row


@dataclass(frozen=True)
class Delivery:
    id: int
    merchant: str
    status: str
    topic: str | None
    trigger: str | None
    loop_return_id: str | None
    attempts: int
    last_error: str | None
    received_at: datetime
    replayable: bool  # it has a body and a topic the service acts on (actions.replay_event)

    def as_json(self) -> dict:
        return {**asdict(self), "received_at": self.received_at.isoformat()}


@dataclass(frozen=True)
class DeliveryPage:
    rows: list[Delivery]
    next_cursor: str | None  # None on the last page


def encode_cursor(received_at: datetime, event_id: int) -> str:
    return Cursor(received_at, event_id).encode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """(received_at, id) of the row a page ends with; ValueError (BadCursor) if `cursor` is not one."""
    decoded = Cursor.decode(cursor)
    return decoded.updated_at, decoded.id


def list_deliveries(session: Session, *, merchant: str | None = None,
                    statuses: Collection[str] = PROBLEMS, since: datetime | None = None,
                    after: str | None = None, limit: int = 50) -> DeliveryPage:
    """One page of deliveries in `statuses` (failed and invalid by default), received at or after
    `since`, newest first, starting after the cursor `after`."""
    unknown = set(statuses) - set(InboxStatus)
    if unknown or not statuses:
        raise ValueError(f"unknown status {', '.join(sorted(unknown))}" if unknown else "no status")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
    ev = WebhookEvent
    query = select(ev.id, ev.merchant, ev.status, ev.topic, ev.trigger, ev.loop_return_id,
                   ev.attempts, ev.last_error, ev.received_at,
                   ev.payload.is_not(None).label("has_body")).where(ev.status.in_(list(statuses)))
    if merchant:
        query = query.where(ev.merchant == merchant)
    if since is not None:
        query = query.where(ev.received_at >= as_utc(since))
    if after:
        at, last_id = decode_cursor(after)
        query = query.where(or_(ev.received_at < at, and_(ev.received_at == at, ev.id < last_id)))
    found = session.execute(query.order_by(ev.received_at.desc(), ev.id.desc()).limit(limit + 1)).all()
    rows = [Delivery(id=r.id, merchant=r.merchant, status=r.status, topic=r.topic, trigger=r.trigger,
                     loop_return_id=r.loop_return_id, attempts=r.attempts,
                     last_error=scrub_text(r.last_error)[:ERROR_CHARS] if r.last_error else None,
                     received_at=as_utc(r.received_at),
                     replayable=bool(r.has_body) and r.status != InboxStatus.IGNORED)
            for r in found[:limit]]
    more = len(found) > limit
    return DeliveryPage(rows=rows, next_cursor=encode_cursor(rows[-1].received_at, rows[-1].id)
                        if more else None)
