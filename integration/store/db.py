"""Engine and session factory. SQLite (WAL) by default, PostgreSQL in production.

On PostgreSQL each process keeps its own pool of at most DB_POOL_SIZE + DB_MAX_OVERFLOW
connections, opened as they are first needed; a thread that finds them all in use waits up to
DB_POOL_TIMEOUT_S for one. A process holds one connection per thread working in the database at
once (a session at a time), so what a process type really opens is the smaller of that and its
threads: docs/operations.md, *Connection budget*. Every connection carries the process's name
as its `application_name` (integration.infra.redis_pool.process_role), so `pg_stat_activity` says who
holds it.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from integration.infra.redis_pool import process_role
from integration.settings import env_float, env_int

_engines: dict[tuple[str, bool], Engine] = {}


def get_engine(url: str) -> Engine:
    """The process's pooled engine for `url` (made at first use)."""
    return _engine(url, transient=False)


def reading_engine(url: str) -> Engine:
    """For an occasional read (the merchants in effect): the process's pooled engine if it has
    one, else, on a server database, one that closes each connection when it is returned. A
    worker's main process, beat and Flower read the merchants at start and run no other query:
    they keep no connection of the plan's afterwards (docs/operations.md, *Connection budget*).
    Its transactions only read: on SQLite they take no write lock (read_scope), so the check
    every MERCHANTS_REFRESH_S in each process never waits behind a busy writer."""
    shared = url.startswith("sqlite") or (url, False) in _engines
    engine = get_engine(url) if shared else _engine(url, transient=True)
    return engine.execution_options(**{READS_ONLY: True})


def _engine(url: str, transient: bool) -> Engine:
    engine = _engines.get((url, transient))
    if engine is None:
        engine = _make_engine(url, transient)
        _engines[(url, transient)] = engine
    return engine


def dispose_engines(url: str) -> None:
    """Close and forget this process's engines for `url` (its pool's connections)."""
    for transient in (False, True):
        engine = _engines.pop((url, transient), None)
        if engine is not None:
            engine.dispose()


def pool_options() -> dict[str, int | float]:
    """DB_POOL_SIZE (4: a web process's threads), DB_MAX_OVERFLOW (0), DB_POOL_TIMEOUT_S (30)."""
    return {"pool_size": max(1, env_int("DB_POOL_SIZE", 4)),
            "max_overflow": max(0, env_int("DB_MAX_OVERFLOW", 0)),
            "pool_timeout": env_float("DB_POOL_TIMEOUT_S", 30.0)}


def _make_engine(url: str, transient: bool = False) -> Engine:
    # hide_parameters: a database error's text (logged, retried, stored as a row's last error)
    # never quotes the values, which can be a webhook's body or a shopper's address.
    if not url.startswith("sqlite"):
        pooling: dict = {"poolclass": NullPool} if transient else pool_options()
        engine = create_engine(url, pool_pre_ping=True, future=True, hide_parameters=True, **pooling)
        if url.startswith("postgresql"):
            @event.listens_for(engine, "do_connect")
            def _name(dialect, conn_rec, cargs, cparams):
                # Read at each connect: a forked Celery pool process names its own connections.
                cparams.setdefault("application_name", f"rlm-loop:{process_role()}"[:63])

        return engine
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        # WAL lets the receiver write while workers read; busy_timeout waits out writer locks.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        # Let SQLAlchemy emit BEGIN itself so writes take the lock up front (BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get(READS_ONLY):
            conn.exec_driver_sql("BEGIN")  # deferred: in WAL, a reader neither takes nor waits for the lock
            return
        if not begin_immediate_polling(conn.connection.dbapi_connection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # still busy: SQLite's own wait, SQLAlchemy's errors

    return engine


SQLITE_BUSY_TIMEOUT_MS = 30000
READS_ONLY = "rlm_loop_reads_only"  # a connection option: read_scope's transactions
# How long a writer polls for SQLite's write lock before leaving the wait to SQLite, and its
# pauses: the first, and the longest.
LOCK_POLL_S, LOCK_PAUSES_S = 2.0, (0.0005, 0.004)


def begin_immediate_polling(dbapi_conn: sqlite3.Connection, within_s: float | None = None) -> bool:
    """BEGIN IMMEDIATE, polling for the write lock in short pauses; False if not begun within
    `within_s` (the caller then waits in SQLite's own way).

    SQLite's busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries however soon the lock is
    free again, so a writer behind one that held the lock for a millisecond often slept ten or
    more: a tail of tens of milliseconds on every step as soon as a merchant's burst kept the
    lock busy (docs/benchmarks.md, *fairness*)."""
    deadline = time.monotonic() + (LOCK_POLL_S if within_s is None else within_s)
    pause, longest = LOCK_PAUSES_S
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=0")
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    return False
            time.sleep(pause)
            pause = min(2 * pause, longest)
    finally:
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False, future=True)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's current transaction has committed (enqueue after commit)."""
    session.info.setdefault("after_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


@contextmanager
def read_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that only reads (a step's snapshot, a cursor). On SQLite its transaction is a
    plain (deferred) BEGIN: in WAL mode a reader sees a consistent snapshot without taking the
    database's one write lock, or waiting for it, as every other session's BEGIN IMMEDIATE
    does. A change made in it is a bug: it raises, and nothing is written."""
    session = factory(autoflush=False, execution_options={READS_ONLY: True})
    try:
        yield session
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("a read-only session changed rows; nothing was written")
    finally:
        session.close()  # ends the transaction; what was read stays loaded (nothing expired)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
