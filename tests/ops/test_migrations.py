"""The Alembic migrations build exactly the schema the models describe.

When a model changes, add a migration (`alembic revision --autogenerate -m "..."`, then review
it); this test fails until the two agree again.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from integration.store.db import get_engine
from integration.store.models import Base, create_all

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes.update(database_url=url, configure_logger=False)
    return config


def test_a_database_upgraded_to_head_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    command.upgrade(alembic_config(url), "head")
    with get_engine(url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_migrations_downgrade_to_nothing_and_up_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert set(inspect(get_engine(url)).get_table_names()) == {"alembic_version"}
    command.upgrade(config, "head")
    assert {"returns", "timeline", "webhook_events", "receipts", "feed_cursors"} <= set(
        inspect(get_engine(url)).get_table_names())


def test_init_db_migrates_a_new_database_and_adopts_one_made_without_migrations(tmp_path, cli):
    fresh = f"sqlite:///{tmp_path / 'new.db'}"
    assert "up to date" in cli("init-db", env={"DATABASE_URL": fresh}).output
    with get_engine(fresh).connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None

    legacy = f"sqlite:///{tmp_path / 'legacy.db'}"
    create_all(get_engine(legacy))  # what the processes do by themselves in development
    assert "stamped" in cli("init-db", env={"DATABASE_URL": legacy}).output
    assert "up to date" in cli("init-db", env={"DATABASE_URL": legacy}).output


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request, tmp_path) -> str:
    """A database of its own (the shared test database is emptied, not dropped, between tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'upgrade.db'}"
    return request.getfixturevalue("postgres").create_database(f"upgrade_{uuid.uuid4().hex[:8]}")


def test_upgrading_to_explicit_schedules_makes_every_open_row_due_once(new_database):
    """0004: returns and inbox rows stored before schedules existed are looked at by the next
    sweep (each step is safe to run again); parked ones wait for a person, finished ones for nothing."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    config = alembic_config(new_database)
    command.upgrade(config, "0003")
    now = datetime.now(UTC)
    engine = get_engine(new_database)
    with engine.begin() as conn:
        for n, state in enumerate(("transmitted", "decided", "needs_attention", "complete")):
            conn.execute(text(
                "INSERT INTO returns (merchant, loop_return_id, state, units, rma_lines, step_attempts, "
                "created_at, updated_at, version) VALUES ('demo', :id, :state, '[]', '[]', 0, :now, :now, 1)"),
                {"id": str(n), "state": state, "now": now})
        for n, status in enumerate(("received", "processing", "done")):
            conn.execute(text(
                "INSERT INTO webhook_events (merchant, dedupe_key, body_sha256, status, attempts, "
                "received_at, updated_at) VALUES ('demo', :key, 'x', :status, 0, :now, :now)"),
                {"key": f"k{n}", "status": status, "now": now})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        returns = {r.state: (r.waiting_for, r.next_attempt_at is not None) for r in conn.execute(
            text("SELECT state, waiting_for, next_attempt_at FROM returns"))}
        events = {r.status: r.next_attempt_at is not None for r in conn.execute(
            text("SELECT status, next_attempt_at FROM webhook_events"))}
    assert returns == {"transmitted": ("step", True), "decided": ("step", True),
                       "needs_attention": ("person", False), "complete": (None, False)}
    assert events == {"received": True, "processing": True, "done": False}


def test_shadow_mode_columns_arrive_empty_and_go_again(new_database):
    """0007: every return stored before shadow mode was decided live (shadow_decided_at NULL); the
    report's index exists; a downgrade drops them and keeps the rows."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    config = alembic_config(new_database)
    command.upgrade(config, "0006")
    now = datetime.now(UTC)
    engine = get_engine(new_database)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO returns (merchant, loop_return_id, state, units, rma_lines, step_attempts, "
            "created_at, updated_at, version) VALUES ('demo', '1', 'complete', '[]', '[]', 0, :now, :now, 1)"),
            {"now": now})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT shadow_decided_at, person_action, person_acted_at FROM returns")).one()
    assert tuple(row) == (None, None, None)
    indexes = {i["name"] for i in inspect(engine).get_indexes("returns")}
    assert "ix_returns_merchant_shadow_decided_at" in indexes
    command.downgrade(config, "0006")
    columns = {c["name"] for c in inspect(get_engine(new_database)).get_columns("returns")}
    assert "shadow_decided_at" not in columns and "person_action" not in columns
    with get_engine(new_database).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM returns")).scalar() == 1
    command.upgrade(config, "head")


def test_store_first_columns_keep_old_rows_event_keys_and_go_again(new_database):
    """0008: rows stored by the receiver that read bodies keep their key as their event key (the
    same event sent again in other bytes is still a duplicate); invalid ones have none; no row has
    a raw body. A downgrade marks a row still unread invalid (the older worker cannot read it)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    config = alembic_config(new_database)
    command.upgrade(config, "0007")
    now = datetime.now(UTC)
    engine = get_engine(new_database)
    with engine.begin() as conn:
        for key, status in (("k-done", "done"), ("k-received", "received"), ("k-invalid", "invalid")):
            conn.execute(text(
                "INSERT INTO webhook_events (merchant, dedupe_key, body_sha256, status, attempts, "
                "received_at, updated_at) VALUES ('demo', :key, 'x', :status, 0, :now, :now)"),
                {"key": key, "status": status, "now": now})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        keys = {r.status: (r.event_key, r.raw_body) for r in conn.execute(
            text("SELECT status, event_key, raw_body FROM webhook_events"))}
    assert keys == {"done": ("k-done", None), "received": ("k-received", None), "invalid": (None, None)}
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO webhook_events (merchant, dedupe_key, body_sha256, status, attempts, raw_body, "
            "received_at, updated_at) VALUES ('demo', 'k-raw', 'x', 'received', 0, :raw, :now, :now)"),
            {"raw": b'{"topic":"return"}', "now": now})
        with pytest.raises(Exception, match=r"(?i)unique"):  # the event key is unique per merchant
            with conn.begin_nested():
                conn.execute(text("UPDATE webhook_events SET event_key = 'k-done' WHERE dedupe_key = 'k-raw'"))
    command.downgrade(config, "0007")
    with get_engine(new_database).connect() as conn:
        statuses = dict(conn.execute(text("SELECT dedupe_key, status FROM webhook_events")).all())
    assert statuses == {"k-done": "done", "k-received": "received", "k-invalid": "invalid", "k-raw": "invalid"}
    columns = {c["name"] for c in inspect(get_engine(new_database)).get_columns("webhook_events")}
    assert "raw_body" not in columns and "event_key" not in columns
    command.upgrade(config, "head")
