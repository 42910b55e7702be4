"""The database schema: Alembic migrations, for the release phase and local stacks."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect as sql_inspect

from integration.db import get_engine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str):
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
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
