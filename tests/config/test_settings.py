"""Numbers from the environment are read one way everywhere (integration.settings.env_int /
env_float): unset or blank gives the default, surrounding whitespace is ignored, and a value
that is not a number stops the process with a message naming the variable."""
from __future__ import annotations

import pytest

from integration.infra import redis_pool
from integration.merchants import ConfigError, load_merchants
from integration.settings import SettingError, env_float, env_int, load_settings
from integration.store.db import pool_options

VAR = "RLM_LOOP_TEST_NUMBER"


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_blank_is_the_default(monkeypatch, raw):
    if raw is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, raw)
    assert env_int(VAR, 7) == 7
    assert env_float(VAR, 2.5) == 2.5
    assert env_int(VAR, None) is None
    assert env_float(VAR, None) is None


def test_whitespace_around_a_value_is_ignored(monkeypatch):
    monkeypatch.setenv(VAR, " 12 \n")
    assert env_int(VAR, 0) == 12
    assert env_float(VAR, 0.0) == 12.0
    monkeypatch.setenv(VAR, "\t0.5 ")
    assert env_float(VAR, 0.0) == 0.5


@pytest.mark.parametrize("raw, reader", [
    ("ten", env_int), ("4.0", env_int), ("4s", env_int),
    ("ten", env_float), ("30s", env_float), ("nan", env_float), ("inf", env_float),
])
def test_a_bad_value_names_the_variable(monkeypatch, raw, reader):
    monkeypatch.setenv(VAR, raw)
    with pytest.raises(SettingError, match=rf"^{VAR}='{raw}' is not a"):
        reader(VAR, 1)
    assert issubclass(SettingError, ValueError)  # what a bad number raised before


def test_service_settings_use_them(monkeypatch):
    monkeypatch.setenv("STUCK_AFTER_S", " 120 ")
    monkeypatch.setenv("MAX_EVENT_ATTEMPTS", "")
    settings = load_settings()
    assert settings.stuck_after_s == 120.0 and settings.max_event_attempts == 8
    monkeypatch.setenv("LOOP_READ_TIMEOUT_S", "thirty")
    with pytest.raises(SettingError, match="LOOP_READ_TIMEOUT_S"):
        load_settings()


def test_database_pool_options_use_them(monkeypatch):
    for name in ("DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    assert pool_options() == {"pool_size": 4, "max_overflow": 0, "pool_timeout": 30.0}
    monkeypatch.setenv("DB_POOL_SIZE", " 2 ")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "  ")
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "7.5")
    assert pool_options() == {"pool_size": 2, "max_overflow": 0, "pool_timeout": 7.5}
    monkeypatch.setenv("DB_POOL_SIZE", "four")
    with pytest.raises(SettingError, match="DB_POOL_SIZE"):
        pool_options()


def test_redis_pool_options_use_them(monkeypatch):
    for name in ("REDIS_POOL_SIZE", "REDIS_POOL_TIMEOUT_S", "REDIS_SOCKET_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(redis_pool._connections, "n", 2)  # a worker's main process needs two
    assert redis_pool.pool_size() == 2
    assert redis_pool._pool_timeout() == 10.0 and redis_pool._socket_timeout() == 10.0
    monkeypatch.setenv("REDIS_POOL_SIZE", " 1 ")
    assert redis_pool.pool_size() == 2  # may only raise what the process needs
    monkeypatch.setenv("REDIS_POOL_SIZE", "3")
    monkeypatch.setenv("REDIS_POOL_TIMEOUT_S", " ")
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_S", "2.5")
    assert redis_pool.pool_size() == 3
    assert redis_pool._pool_timeout() == 10.0 and redis_pool._socket_timeout() == 2.5
    monkeypatch.setenv("REDIS_POOL_TIMEOUT_S", "10s")
    with pytest.raises(SettingError, match="REDIS_POOL_TIMEOUT_S"):
        redis_pool._pool_timeout()
    monkeypatch.setenv("REDIS_POOL_SIZE", "1.5")
    with pytest.raises(SettingError, match="REDIS_POOL_SIZE"):
        redis_pool.pool_size()


def test_the_merchant_from_the_environment_names_a_bad_number(monkeypatch):
    for name in ("MERCHANTS_TOML", "MERCHANTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLM_COMPANY", " 91 ")
    monkeypatch.setenv("PARTIAL_GRACE_S", "")
    merchant = load_merchants()["demo"]
    assert merchant.rlm_company == 91 and merchant.criteria.partial_grace_s == 72 * 3600
    monkeypatch.setenv("RLM_COMPANY", "ninety")
    with pytest.raises(ConfigError, match="RLM_COMPANY='ninety' is not a whole number"):
        load_merchants()
