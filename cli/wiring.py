"""What the commands share: the service's settings, merchants and Context, and the database
checks that turn a missing or empty database into one line saying what to do.

Built fresh on every command: tests run several commands in one process.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
from sqlalchemy import inspect as sql_inspect
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from integration.infra import redis_pool
from integration.infra.embedded_redis import ensure_redis_url
from integration.merchants import ConfigError, Merchant
from integration.settings import Settings, load_settings
from integration.store import merchant_store
from integration.store.db import get_engine, session_factory
from integration.store.models import Return
from integration.workflow.context import Context
from workers.names import publisher


def name_connections() -> None:
    """Name this process's Redis and database connections `cli` (unless it already has a role)."""
    if not redis_pool.role():
        redis_pool.configure("cli")


def redact(url: str) -> str:
    """A URL fit to print: no password."""
    parts = urlsplit(url)
    if parts.password:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        user = f"{parts.username}:***@" if parts.username else "***@"
        return urlunsplit(parts._replace(netloc=user + host))
    return url


def settings_and_merchants() -> tuple[Settings, dict[str, Merchant]]:
    """The settings and the merchants in effect: the merchants table's, else TOML or the
    environment (integration/store/merchant_store.py)."""
    settings = load_settings()
    try:
        with database_errors(settings.database_url):
            return settings, merchant_store.in_effect(settings.database_url)
    except ConfigError as exc:
        raise click.ClickException(f"merchant configuration: {exc}") from None


def context(settings: Settings, merchants: dict[str, Merchant], publish: bool = True) -> Context:
    """The service's Context (Context.for_service), publishing steps by task name (never
    importing the workers) and sharing the Loop rate limit. Without `publish`, no broker is
    needed (nor started)."""
    url = ensure_redis_url(settings.data_dir) if publish else None
    app = publisher(url) if url else None
    send = (lambda task, args, **kw: app.send_task(task, args=args, **kw)) if app is not None else None
    return Context.for_service(settings, merchants, session_factory(settings.database_url), send,
                               redis_pool.client(url) if url else None)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached (or has no driver here) ends the command with one line."""
    where = redact(url)
    try:
        yield
    except ArgumentError:
        raise click.ClickException(f"DATABASE_URL is not a database URL: {where}") from None
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("psycopg", "psycopg2"):
            raise
        raise click.ClickException(f"no PostgreSQL driver here for {where}: "  # the `postgres` extra
                                   "pip install 'rlm-loop-returns[postgres]'") from None
    except SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise click.ClickException(f"cannot use the database {where}: "
                                   f"{lines[0] if lines else type(exc).__name__}") from None


def require_database(url: str) -> None:
    """Stop with what to do, not a traceback, when the database is missing, unreachable or empty.

    A SQLite file that does not exist is not created here (connecting would make an empty one).
    """
    with database_errors(url):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database).resolve()
            if not path.exists():
                raise click.ClickException(f"no database at {path} (set DATABASE_URL, or DATA_DIR): "
                                           "run `rlm-loop init-db` to create it")
        with get_engine(url).connect() as conn:
            tables = set(sql_inspect(conn).get_table_names())
    if "returns" not in tables:
        raise click.ClickException(f"the database has no tables yet ({redact(url)}): "
                                   "run `rlm-loop init-db`")


def merchant_of(ctx: Context, loop_return_id: str, merchant: str | None) -> str:
    """The merchant of a Loop return id: given, or the only one that has it."""
    if merchant:
        return merchant
    with ctx.sessions() as s:
        owners = s.scalars(select(Return.merchant).where(Return.loop_return_id == loop_return_id)).all()
    if not owners:
        raise click.ClickException(f"no return {loop_return_id} in the database")
    if len(owners) > 1:
        raise click.ClickException(f"return {loop_return_id} exists for merchants {', '.join(owners)}: "
                                   "add --merchant")
    return owners[0]
