"""The database schema: the Alembic migrations that `rlm-loop init-db` and local stacks run.

The migration scripts are package data (integration/migrations), so `rlm-loop init-db` works
from an installed wheel as well as from a checkout; the root alembic.ini points at the same
directory for the `alembic` command (the release phase).
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect as sql_inspect

import integration
from integration.store.db import get_engine

MIGRATIONS = Path(integration.__file__).resolve().parent / "migrations"


def alembic_config(url: str):
    """Alembic's configuration without an ini file: the packaged scripts, the given URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes.update(database_url=url, configure_logger=False)
    return config


def migrate(url: str) -> str:
    from alembic import command

    config = alembic_config(url)
    engine = get_engine(url)
    tables = set(sql_inspect(engine).get_table_names())
    if tables and "alembic_version" not in tables:
        # Made by the processes' own create_all (development): record it as current.
        command.stamp(config, "head")
        return "database schema existed without migrations; stamped at head"
    command.upgrade(config, "head")
    return "database schema is up to date"
