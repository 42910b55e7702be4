"""The webhook inbox row: one INSERT per delivery, a repeat answered by the unique key."""
from __future__ import annotations

import threading

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from .models import WebhookEvent, utcnow

_TABLE = WebhookEvent.__table__
_COLUMNS = ("merchant", "dedupe_key", "body_sha256", "status", "topic", "trigger", "loop_return_id",
            "payload", "last_error", "attempts", "received_at", "updated_at")


def _insert(dialect):
    # Built once per dialect with bound parameters, so SQLAlchemy compiles it once; ON CONFLICT
    # makes a repeat delivery a no-op without an exception and a rolled-back transaction.
    return (dialect.insert(_TABLE).values({name: bindparam(name) for name in _COLUMNS})
            .on_conflict_do_nothing(index_elements=["merchant", "dedupe_key"])
            .returning(_TABLE.c.id))


_INSERTS = {"sqlite": _insert(sqlite), "postgresql": _insert(postgresql)}
# SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's busy
# handler (1, 2, 5 ... 100 ms per try) rather than being woken: the receiver's threads queue here
# instead, so only writers in other processes can make one wait.
_SQLITE_WRITER = threading.Lock()


def insert_event(engine: Engine, *, merchant: str, dedupe_key: str, body_sha256: str, status: str,
                 event: dict | None = None, error: str | None = None) -> int | None:
    """Store one delivery and commit; its row id, or None if the same event is already stored."""
    event = event or {}
    now = utcnow()
    row = {"merchant": merchant, "dedupe_key": dedupe_key, "body_sha256": body_sha256, "status": status,
           "topic": event.get("topic"), "trigger": event.get("trigger"),
           "loop_return_id": event.get("loop_return_id"), "payload": event or None, "last_error": error,
           "attempts": 0, "received_at": now, "updated_at": now}
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return conn.execute(_INSERTS[engine.dialect.name], row).scalar()
    with _SQLITE_WRITER, engine.begin() as conn:
        return conn.execute(_INSERTS["sqlite"], row).scalar()
