"""Alembic environment: the service's own models and database URL (see docs/operations.md)."""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from integration.infra import redis_pool
from integration.merchants import load_merchants
from integration.production import refuse_to_run_wrong
from integration.settings import load_settings
from integration.store.db import get_engine
from integration.store.models import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # the alembic command's output
target_metadata = Base.metadata
# Tests and tools may hand in a URL; otherwise the service's own (DATABASE_URL or DATA_DIR).
def _database_url() -> str:
    given = config.attributes.get("database_url")
    if given:
        return str(given)
    # The release phase (`alembic upgrade head`): production refuses a wrong configuration.
    if not redis_pool.role():
        redis_pool.configure("release")  # its connection's application_name
    settings = load_settings()
    refuse_to_run_wrong(settings, load_merchants)
    return settings.database_url


url = _database_url()


def run_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with get_engine(url).connect() as connection:
        # SQLite alters tables by copying them; batch mode makes migrations portable to it.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
