"""The Alembic migrations on PostgreSQL, what production runs (tests/ops/test_migrations.py
covers SQLite): they build exactly the models' schema, and go down and up again cleanly."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from integration.store.db import get_engine
from integration.store.models import Base
from integration.store.schema import alembic_config, migrate

TABLES = {"returns", "timeline", "webhook_events", "receipts", "feed_cursors"}


def test_migrations_build_the_models_schema_on_postgresql_and_round_trip(postgres):
    url = postgres.create_database("migrations")  # its own database: the other tests' is emptied
    assert "up to date" in migrate(url)  # what the release phase runs
    with get_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

    config = alembic_config(url)
    command.downgrade(config, "base")
    assert set(inspect(get_engine(url)).get_table_names()) == {"alembic_version"}
    command.upgrade(config, "head")
    assert TABLES <= set(inspect(get_engine(url)).get_table_names())
