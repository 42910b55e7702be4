"""The webhook inbox row: one INSERT per delivery, a repeat answered by the unique key."""
from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from integration.store.models import InboxStatus, WebhookEvent, fit_row, utcnow

_TABLE = WebhookEvent.__table__
_COLUMNS = ("merchant", "dedupe_key", "body_sha256", "status", "topic", "trigger", "loop_return_id",
            "payload", "last_error", "attempts", "next_attempt_at", "received_at", "updated_at")
_RAW_COLUMNS = ("merchant", "dedupe_key", "body_sha256", "status", "raw_body", "attempts",
                "next_attempt_at", "received_at", "updated_at")


def _insert(dialect, columns=_COLUMNS):
    # Built once per dialect with bound parameters, so SQLAlchemy compiles it once; ON CONFLICT
    # makes a repeat delivery a no-op without an exception and a rolled-back transaction.
    return (dialect.insert(_TABLE).values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing(index_elements=["merchant", "dedupe_key"])
            .returning(_TABLE.c.id))


_INSERTS = {"sqlite": _insert(sqlite), "postgresql": _insert(postgresql)}
_RAW_INSERTS = {"sqlite": _insert(sqlite, _RAW_COLUMNS), "postgresql": _insert(postgresql, _RAW_COLUMNS)}
# A processing failure is kept however often it comes, byte-for-byte equal or not (see
# integration.loop.webhooks.dedupe_key). The receiver does not parse: it looks for the topic's
# name, quoted as a JSON string starts. Another event that happens to hold the text only loses
# the byte-identical shortcut; the worker's event key still handles it once.
_PROCESSING_MARK = b'"return.processing'
# SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's busy
# handler (1, 2, 5 ... 100 ms per try) rather than being woken, so a few deliveries waited far
# longer than the rest. The receiver's writers queue instead: its threads on a lock, its
# processes on a file lock beside the database (the kernel wakes the next one at once).
_SQLITE_WRITER = threading.Lock()
_lock_files: dict[tuple[int, str], int] = {}


@contextmanager
def _sqlite_writer(engine: Engine):
    path = engine.url.database
    with _SQLITE_WRITER:
        if not path or path == ":memory:":
            yield
            return
        key = (os.getpid(), path)  # opened per process: a descriptor inherited over fork shares its lock
        if key not in _lock_files:
            _lock_files[key] = os.open(f"{path}.inbox-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(_lock_files[key], fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(_lock_files[key], fcntl.LOCK_UN)


def insert_raw(engine: Engine, *, merchant: str, raw: bytes, lease_s: float) -> int | None:
    """Store one signed delivery as received, unread, and commit: its row id, or None if these
    very bytes are already stored. The worker reads the body (events.handle_event); the row is
    due for the sweeper `lease_s` from now, should its message be lost."""
    body_sha256 = hashlib.sha256(raw).hexdigest()
    now = utcnow()
    row = {"merchant": merchant[:64], "body_sha256": body_sha256, "status": InboxStatus.RECEIVED.value,
           "dedupe_key": secrets.token_hex(32) if _PROCESSING_MARK in raw else body_sha256,
           "raw_body": raw, "attempts": 0, "next_attempt_at": now + timedelta(seconds=lease_s),
           "received_at": now, "updated_at": now}
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return conn.execute(_RAW_INSERTS[engine.dialect.name], row).scalar()
    with _sqlite_writer(engine), engine.begin() as conn:
        return conn.execute(_RAW_INSERTS["sqlite"], row).scalar()


def insert_event(engine: Engine, *, merchant: str, dedupe_key: str, body_sha256: str, status: str,
                 lease_s: float, event: dict | None = None, error: str | None = None) -> int | None:
    """Store one delivery and commit; its row id, or None if the same event is already stored.

    A row to handle is due for the sweeper `lease_s` from now, should its message be lost."""
    event = event or {}
    now = utcnow()
    retry_at = now + timedelta(seconds=lease_s) if status == InboxStatus.RECEIVED else None
    row = {"merchant": merchant, "dedupe_key": dedupe_key, "body_sha256": body_sha256, "status": status,
           "topic": event.get("topic"), "trigger": event.get("trigger"),
           "loop_return_id": event.get("loop_return_id"), "payload": event or None, "last_error": error,
           "attempts": 0, "next_attempt_at": retry_at, "received_at": now, "updated_at": now}
    row = fit_row(_TABLE, row)
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return conn.execute(_INSERTS[engine.dialect.name], row).scalar()
    with _sqlite_writer(engine), engine.begin() as conn:
        return conn.execute(_INSERTS["sqlite"], row).scalar()
