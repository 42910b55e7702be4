"""Process-wide wiring shared by the web and worker processes: settings, database, broker."""
from __future__ import annotations

from functools import lru_cache

from integration.infra.embedded_redis import ensure_redis_url
from integration.merchants import Merchant
from integration.settings import env_float, load_settings
from integration.store import merchant_store
from integration.store.db import get_engine, session_factory
from integration.store.models import create_all


@lru_cache(maxsize=1)
def settings():
    return load_settings()


@lru_cache(maxsize=1)
def _merchants() -> merchant_store.Refreshing:
    url = settings().database_url
    return merchant_store.Refreshing(lambda: merchant_store.signature(url),
                                     lambda: merchant_store.in_effect(url),
                                     refresh_s=env_float("MERCHANTS_REFRESH_S", 5.0))


def merchants() -> dict[str, Merchant]:
    """The merchants in effect (merchant_store.in_effect): the same dict until the merchants
    table changes, which is noticed within MERCHANTS_REFRESH_S seconds, without a restart."""
    return _merchants().get()


@lru_cache(maxsize=1)
def sessions():
    url = settings().database_url
    create_all(get_engine(url))  # idempotent; migrations take over in production
    return session_factory(url)


def redis_url() -> str:
    return ensure_redis_url(settings().data_dir)
