"""What the service keeps about shoppers and deliveries, and for how long.

- A delivery's raw body (the shopper's email and address among the rest): on its inbox row only
  until a worker reads it, then replaced by the parsed event (workflow/events.py), or cleared
  when the row is finished with before that (`finish_event`).
- The shopper's ship-from address: on an inbox row until the row is finished with, whatever the
  outcome (`finish_event`); on a return only while it is `received` (lifecycle.transition).
- Webhook bodies, their error texts and timeline details: RETENTION_DAYS (`purge_old_data`).
  The rows stay, with their dedupe keys, so an old delivery sent again is still recognised as a
  duplicate; only the texts that can carry data go.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from integration.store.db import session_scope
from integration.store.models import FINISHED_EVENTS, Return, TimelineEntry, WebhookEvent
from integration.workflow import lifecycle as lc

BATCH = 1000  # rows per transaction: short locks, whatever the backlog


def finish_event(ev: WebhookEvent, status: str, error: str | None) -> None:
    """Give an inbox row its final status; the raw body and the shopper's address have no
    business staying."""
    ev.status, ev.last_error, ev.next_attempt_at, ev.raw_body = status, error, None, None
    if ev.payload and "ship_from" in ev.payload:
        ev.payload = {k: v for k, v in ev.payload.items() if k != "ship_from"}


def purge_old_data(sessions: sessionmaker[Session], now: datetime, days: float, *,
                   batch: int = BATCH, max_batches: int = 20) -> dict[str, int]:
    """Clear what retention allows no longer, one short transaction per batch; rows cleared by kind.

    A run stops after `max_batches` batches of a kind (the next run goes on), so a first run over
    a large backlog never holds the database for long.
    """
    cutoff = now - timedelta(days=days)
    kinds: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        # Finished deliveries: the body and the error text (a validation message can quote it).
        "webhook_events": (WebhookEvent, select(WebhookEvent.id).where(
            WebhookEvent.status.in_(FINISHED_EVENTS), WebhookEvent.received_at < cutoff,
            (WebhookEvent.payload.is_not(None)) | (WebhookEvent.last_error.is_not(None))
            | (WebhookEvent.raw_body.is_not(None))),
            {"payload": None, "last_error": None, "raw_body": None}),
        # Timeline details quote upstream messages and notes; the cause and states stay.
        "timeline": (TimelineEntry, select(TimelineEntry.id).where(
            TimelineEntry.at < cutoff, TimelineEntry.detail.is_not(None)), {"detail": None}),
        # Returns that left `received` before the lifecycle cleared the address on the way out.
        "ship_from": (Return, select(Return.id).where(
            Return.state != lc.RECEIVED, Return.ship_from.is_not(None)), {"ship_from": None}),
    }
    counts = {}
    for name, (model, query, values) in kinds.items():
        counts[name] = 0
        for _ in range(max_batches):
            cleared = _clear(sessions, model, query.order_by(model.id).limit(batch), values)
            counts[name] += cleared
            if cleared < batch:
                break
    return counts


def _clear(sessions: sessionmaker[Session], model, ids_query, values: dict[str, Any]) -> int:
    with session_scope(sessions) as s:
        ids = list(s.scalars(ids_query))
        if ids:
            # updated_at as it was: the pages order by it as "last moved", and clearing is no move.
            keep = {"updated_at": model.updated_at} if hasattr(model, "updated_at") else {}
            s.execute(update(model).where(model.id.in_(ids)).values(**values, **keep)
                      .execution_options(synchronize_session=False))
    return len(ids)
