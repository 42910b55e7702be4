"""The Alembic migrations build exactly the schema the models describe.

When a model changes, add a migration (`alembic revision --autogenerate -m "..."`, then review
it); this test fails until the two agree again.
"""
from __future__ import annotations

from pathlib import Path

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
