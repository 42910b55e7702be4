"""The webhook inbox row: one INSERT per delivery, the raw body stored unread, a repeat of the
same bytes answered by the unique key."""
from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from integration.loop.webhooks import PROCESSING_TOPIC
from integration.store.db import begin_immediate_polling
from integration.store.models import InboxStatus, WebhookEvent, utcnow

_TABLE = WebhookEvent.__table__
_COLUMNS = ("merchant", "dedupe_key", "body_sha256", "status", "raw_body", "attempts",
                "next_attempt_at", "received_at", "updated_at")


def _insert(dialect):
    # Built once per dialect with bound parameters and compiled once (_raw_insert); ON CONFLICT
    # makes a repeat delivery a no-op without an exception and a rolled-back transaction.
    return (dialect.insert(_TABLE).values({name: bindparam(name) for name in _COLUMNS})
            .on_conflict_do_nothing(index_elements=["merchant", "dedupe_key"])
            .returning(_TABLE.c.id))


_INSERTS = {"sqlite": _insert(sqlite), "postgresql": _insert(postgresql)}
# A processing failure is kept however often it comes, byte-for-byte equal or not (see
# integration.loop.webhooks.dedupe_key). The receiver does not parse: it looks for the topic's
# name, quoted as a JSON string starts. Another event that happens to hold the text only loses
# the byte-identical shortcut; the worker's event key still handles it once.
_PROCESSING_MARK = f'"{PROCESSING_TOPIC}'.encode()
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
    insert = _raw_insert(engine)
    if engine.dialect.name != "sqlite":
        return insert(row)
    with _sqlite_writer(engine):
        return insert(row)


_raw_inserts: dict[Engine, Callable[[dict], int | None]] = {}


def _raw_insert(engine: Engine) -> Callable[[dict], int | None]:
    """The receiver's one statement, run on the driver's own connection (from the engine's pool).

    The same INSERT as the Core statement above, compiled once, its values converted by the
    columns' own types; skipping SQLAlchemy's per-execution machinery (events, compiled-cache
    lookup, result wrapping) took about a third off the cost of storing a delivery, which is
    most of what the receiver does (docs/benchmarks.md)."""
    insert = _raw_inserts.get(engine)
    if insert is not None:
        return insert
    dialect = engine.dialect
    sqlite_db = dialect.name == "sqlite"
    # Named parameters, so the row's dict is passed as it is (sqlite3: `:name`, psycopg: `%(name)s`).
    compiled = _INSERTS[dialect.name].compile(dialect=sqlite.dialect(paramstyle="named") if sqlite_db
                                                  else dialect)
    sql = str(compiled)
    converters = {name: convert for name in _COLUMNS
                  if (convert := _TABLE.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None}

    def run(row: dict) -> int | None:
        params = {name: converters[name](value) if name in converters else value for name, value in row.items()}
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            # The connection is in autocommit mode (store/db.py): take the write lock now, polling
            # for it as every writer does (a worker may hold it), then in SQLite's own way.
            if sqlite_db and not begin_immediate_polling(conn.dbapi_connection):  # type: ignore[arg-type]
                cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(sql, params)
            found = cursor.fetchall()
            cursor.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()  # back to the pool
        return found[0][0] if found else None

    _raw_inserts[engine] = run
    return run
