"""Process-wide wiring shared by the web and worker processes: settings, database, broker."""
from __future__ import annotations

from functools import lru_cache

from integration.infra.embedded_redis import ensure_redis_url
from integration.merchants import load_merchants
from integration.settings import load_settings
from integration.store.db import get_engine, session_factory
from integration.store.models import create_all


@lru_cache(maxsize=1)
def settings():
    return load_settings()


@lru_cache(maxsize=1)
def merchants():
    return load_merchants()


@lru_cache(maxsize=1)
def sessions():
    url = settings().database_url
    create_all(get_engine(url))  # idempotent; migrations take over in production
    return session_factory(url)


def redis_url() -> str:
    return ensure_redis_url(settings().data_dir)
