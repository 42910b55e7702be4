"""All service state. Unique keys make duplicates impossible rather than merely unlikely."""
from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class InboxStatus(StrEnum):
    """An inbox row's life: received -> processing -> done | ignored | failed | invalid |
    duplicate. The receiver stores the raw delivery as `received`; the worker reads it first:
    `invalid` (not JSON or not a usable Loop event), `duplicate` (the same event as a row already
    handled, in other bytes) and `ignored` (a topic we do not act on) end there."""

    RECEIVED = "received"
    PROCESSING = "processing"
    DONE = "done"
    IGNORED = "ignored"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"


OPEN_EVENTS = (InboxStatus.RECEIVED, InboxStatus.PROCESSING)  # a worker still has to finish them
FINISHED_EVENTS = (InboxStatus.DONE, InboxStatus.IGNORED, InboxStatus.FAILED, InboxStatus.INVALID,
                   InboxStatus.DUPLICATE)


class WebhookEvent(Base):
    """Inbox: every signed Loop delivery, stored raw before it is acknowledged, then read by a
    worker (integration/workflow/events.py) into its PII-minimised event."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("merchant", "dedupe_key", name="uq_webhook_events_dedupe"),
        UniqueConstraint("merchant", "event_key", name="uq_webhook_events_event_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant: Mapped[str] = mapped_column(String(64))
    # The delivery's key, set by the receiver: the body's SHA-256 (a byte-identical re-delivery
    # is refused by the unique constraint), random for a processing failure (store/inbox.py).
    dedupe_key: Mapped[str] = mapped_column(String(64))
    body_sha256: Mapped[str] = mapped_column(String(64))
    # The event's key (integration.loop.webhooks.dedupe_key), set by the worker once the body is
    # read: the same event in other bytes is handled once. NULL until then, and for a row that
    # is invalid or a duplicate (NULLs never collide, on SQLite or PostgreSQL).
    event_key: Mapped[str | None] = mapped_column(String(64))
    # The signed body as received, kept only until a worker has read it (it holds the shopper's
    # email and address): then replaced by `payload`, or cleared.
    # Deferred: only the worker reading it loads it (undefer), not every query of the inbox.
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    topic: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str | None] = mapped_column(String(64))
    loop_return_id: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # InboxStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # While open: when the sweeper hands the row to a worker again should its message be lost
    # (indexed: the sweeper selects due rows). NULL once finished.
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    # SQL NULL for None (not JSON 'null'), so what retention cleared is plain to see and to skip.
    payload: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Return(Base):
    """One Loop return and its RMA; `state` is our lifecycle (see integration.workflow.lifecycle)."""

    __tablename__ = "returns"
    __table_args__ = (
        UniqueConstraint("merchant", "loop_return_id", name="uq_returns_loop_id"),
        # Receipts name the RA, not the return: found by (merchant, RA) at any number of returns.
        Index("ix_returns_merchant_rma_number", "merchant", "rma_number"),
        # One merchant's operator list: its order and keyset seek (integration/ops/queries.py).
        Index("ix_returns_merchant_updated_at_id", "merchant", "updated_at", "id"),
        # The shadow agreement report: one merchant's shadow decisions since a day.
        Index("ix_returns_merchant_shadow_decided_at", "merchant", "shadow_decided_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant: Mapped[str] = mapped_column(String(64))
    loop_return_id: Mapped[str] = mapped_column(String(32))
    # The RA's idempotency key in RLM, scoped by merchant: two merchants on one RLM company can
    # have returns with the same Loop id (integration.workflow.mapping.rma_ref).
    rma_external_ref: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(32), index=True)
    loop_state: Mapped[str | None] = mapped_column(String(16))
    loop_updated_at: Mapped[str | None] = mapped_column(String(40))
    order_name: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(8))
    total: Mapped[str | None] = mapped_column(String(32))
    loop_created_at: Mapped[str | None] = mapped_column(String(40))
    # One entry per Loop unit: line_item_id, sku, barcode, price, discount, reasons, title.
    units: Mapped[list] = mapped_column(JSON, default=list)
    # The shopper's ship-from, kept only while the return is `received` (lifecycle.transition).
    ship_from: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    rma_number: Mapped[int | None] = mapped_column(Integer)
    rma_status: Mapped[str | None] = mapped_column(String(24))
    # RA lines as RLM stored them: line_number, sku, upc, qty_authorized, unit_price, refs.
    rma_lines: Mapped[list] = mapped_column(JSON, default=list)
    transmitted_at: Mapped[datetime | None]
    first_receipt_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    decision: Mapped[str | None] = mapped_column(String(24))
    decision_detail: Mapped[dict | None] = mapped_column(JSON)
    loop_note: Mapped[str | None] = mapped_column(String(255))
    loop_action_claimed_at: Mapped[datetime | None]
    # Set just before the Loop action's request leaves: from then on it may have reached Loop.
    loop_call_sent_at: Mapped[datetime | None]
    loop_actioned_at: Mapped[datetime | None]
    # Shadow mode (workflow/shadow.py): when the decision was recorded instead of sent to Loop
    # (set once, never cleared: such a return is never acted on in Loop by us), and what a person
    # then did in Loop (the Loop state they left it in: closed, review, cancelled, expired).
    shadow_decided_at: Mapped[datetime | None]
    person_action: Mapped[str | None] = mapped_column(String(16))
    person_acted_at: Mapped[datetime | None]
    # The explicit schedule (lifecycle.Wait): what the return waits for in its state, when the
    # sweeper looks again (indexed: it selects due rows), and the end of a wait for Loop (past
    # it the return is parked). NULL only when terminal. Never inferred from updated_at.
    waiting_for: Mapped[str | None] = mapped_column(String(32))
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    wait_deadline: Mapped[datetime | None]
    attention_reason: Mapped[str | None] = mapped_column(Text)
    # The step that was running when the return was parked, so `retry` resumes there.
    attention_step: Mapped[str | None] = mapped_column(String(32))
    # How many times the sweeper has sent the state's step again (its message lost); reset when
    # the step reaches a new wait or state.
    step_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)  # pages' order
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    timeline: Mapped[list[TimelineEntry]] = relationship(
        back_populates="ret", order_by="TimelineEntry.id", cascade="all, delete-orphan"
    )

    # Optimistic locking: two workers touching one return cannot both win a transition.
    # SQLAlchemy types it as an instance attribute (so no ClassVar) and reads it once, at mapping.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class TimelineEntry(Base):
    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(primary_key=True)
    return_id: Mapped[int] = mapped_column(ForeignKey("returns.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)

    ret: Mapped[Return] = relationship(back_populates="timeline")


class Receipt(Base):
    """An RLM item receipt (append-only in RLM), deduplicated on its receipt number."""

    __tablename__ = "receipts"
    __table_args__ = (
        UniqueConstraint("merchant", "receipt_number", name="uq_receipts_number"),
        Index("ix_receipts_merchant_ra_number", "merchant", "ra_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant: Mapped[str] = mapped_column(String(64))
    receipt_number: Mapped[int] = mapped_column(Integer)
    ra_number: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[str | None] = mapped_column(String(40))
    lines: Mapped[list] = mapped_column(JSON, default=list)
    stored_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeedCursor(Base):
    """Where each incremental feed (RLM receipts, Loop returns list) got to, per merchant."""

    __tablename__ = "feed_cursors"

    merchant: Mapped[str] = mapped_column(String(64), primary_key=True)
    feed: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StoredMerchant(Base):
    """A merchant kept as data (integration/store/merchant_store.py): the TOML entry without its
    secrets as JSON, the secrets (Loop API key, RLM key, webhook secrets) as one Fernet token.
    `version` goes up on every change, so processes see a change without reading every row."""

    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    config: Mapped[dict] = mapped_column(JSON)
    secrets: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def receipts_for(session, merchant: str, ra_number: int | None) -> list[Receipt]:
    """The receipts posted against one RA, in the order RLM numbered them."""
    if ra_number is None:
        return []
    return list(session.scalars(select(Receipt).where(Receipt.merchant == merchant,
                                                      Receipt.ra_number == ra_number)
                                .order_by(Receipt.receipt_number)))


@event.listens_for(Session, "before_flush")
def _fit_to_columns(session: Session, _context, _instances) -> None:
    """Cut every text written to a bounded column to its size: PostgreSQL refuses what does not
    fit (StringDataRightTruncation) where SQLite silently keeps it, so a long upstream message
    must never be able to stop a step."""
    for obj in (*session.new, *session.dirty):
        state = inspect(obj)
        for attr in state.mapper.column_attrs:
            size = getattr(attr.columns[0].type, "length", None)
            value = state.dict.get(attr.key)  # only what is loaded: nothing to fetch mid-flush
            if size is not None and isinstance(value, str) and len(value) > size:
                setattr(obj, attr.key, value[:size])


def create_all(engine) -> None:
    Base.metadata.create_all(engine)


__all__ = [
    "FINISHED_EVENTS",
    "OPEN_EVENTS",
    "Base",
    "FeedCursor",
    "InboxStatus",
    "Receipt",
    "Return",
    "StoredMerchant",
    "TimelineEntry",
    "WebhookEvent",
    "create_all",
    "func",
    "receipts_for",
    "utcnow",
]
