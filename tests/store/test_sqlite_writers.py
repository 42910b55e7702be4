"""SQLite's write lock as the service takes it (integration/store/db.py): a writer behind another
polls for the lock in short pauses instead of SQLite's busy handler (which sleeps 1, 2, 5 ... 100
ms between tries), gets it as soon as it is free, and past the polling window still waits in
SQLite's own way, its errors SQLAlchemy's; a session that only reads takes no lock at all. SQLite
only, but for the last test: PostgreSQL has no database-wide lock."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from integration.store import db


@pytest.fixture
def engine(tmp_path):
    engine = db.get_engine(f"sqlite:///{tmp_path / 'writers.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    yield engine
    db.dispose_engines(str(engine.url))


def hold_the_lock(engine, seconds: float, holding: threading.Event) -> threading.Thread:
    def run():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES ('first')"))
            holding.set()
            threading.Event().wait(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert holding.wait(5)
    return thread


def test_a_writer_behind_another_gets_the_lock_once_it_is_free(engine):
    first = hold_the_lock(engine, 0.3, threading.Event())
    with engine.begin() as conn:  # waits for the first to commit, then writes
        conn.execute(text("INSERT INTO t VALUES ('second')"))
    first.join()
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT who FROM t ORDER BY rowid"))] == ["first", "second"]
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.SQLITE_BUSY_TIMEOUT_MS


def test_past_the_polling_window_sqlite_waits_on_its_own(engine, monkeypatch):
    monkeypatch.setattr(db, "LOCK_POLL_S", 0.05)
    first = hold_the_lock(engine, 0.4, threading.Event())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('second')"))
    first.join()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_polling_alone_reports_a_lock_still_held():
    import sqlite3
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "held.db"
    holder, waiter = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
    holder.execute("BEGIN IMMEDIATE")
    assert db.begin_immediate_polling(waiter, within_s=0.05) is False  # no transaction begun
    assert waiter.in_transaction is False
    holder.execute("COMMIT")
    assert db.begin_immediate_polling(waiter, within_s=0.05) is True
    assert waiter.in_transaction is True
    waiter.execute("COMMIT")


def test_a_read_scope_reads_while_a_writer_holds_the_lock(engine):
    """A step's snapshot neither takes the write lock nor waits for it: it sees what was
    committed before the writer began."""
    import time

    from sqlalchemy.orm import sessionmaker

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('committed')"))
    holding = threading.Event()
    writer = hold_the_lock(engine, 1.0, holding)
    started = time.monotonic()
    with db.read_scope(sessionmaker(bind=engine)) as s:
        seen = [r[0] for r in s.execute(text("SELECT who FROM t ORDER BY rowid"))]
    waited = time.monotonic() - started
    writer.join()
    assert seen == ["committed"]
    assert waited < 0.5  # the writer held the lock for 1 s


def test_the_merchants_check_reads_while_a_writer_holds_the_lock(engine):
    """Every process looks at the merchants table every few seconds (merchant_store.signature):
    that read must not wait for the workflow's writers either."""
    import time

    from integration.store.merchant_store import signature

    holding = threading.Event()
    writer = hold_the_lock(engine, 1.0, holding)
    started = time.monotonic()
    assert signature(str(engine.url)) == (0, 0)  # no merchants table here
    with db.reading_engine(str(engine.url)).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0  # the insert is not committed
    waited = time.monotonic() - started
    writer.join()
    assert waited < 0.5  # the writer held the lock for 1 s


def test_a_change_in_a_read_scope_is_refused_and_not_written(sessions):
    """On both databases."""
    from integration.store.models import FeedCursor

    with pytest.raises(RuntimeError, match="read-only"):
        with db.read_scope(sessions) as s:
            s.add(FeedCursor(merchant="demo", feed="rlm_receipts", cursor="c1"))
    with db.read_scope(sessions) as s:
        assert s.get(FeedCursor, ("demo", "rlm_receipts")) is None
