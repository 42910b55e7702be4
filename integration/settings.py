"""Service settings, read once from the environment (Heroku-style config vars).

Every number the service takes from the environment is read with `env_int` / `env_float`, here
and in the database and Redis pools, the Celery configuration and the merchant built from the
environment. docs/operations.md, *Configuration*, lists every variable with its default.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload


class SettingError(ValueError):
    """An environment variable holds a value the service cannot use; the message names it."""


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _number_text(name: str) -> str | None:
    """The variable's text with surrounding whitespace dropped; None when unset or blank."""
    return os.environ.get(name, "").strip() or None


@overload
def env_int(name: str, default: int) -> int: ...
@overload
def env_int(name: str, default: None) -> int | None: ...
def env_int(name: str, default: int | None) -> int | None:
    """An integer setting: `default` when unset or blank, SettingError naming it otherwise."""
    raw = _number_text(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a whole number") from None


@overload
def env_float(name: str, default: float) -> float: ...
@overload
def env_float(name: str, default: None) -> float | None: ...
def env_float(name: str, default: float | None) -> float | None:
    """A number setting (seconds, days, a rate): `default` when unset or blank, SettingError
    naming it when not a finite number."""
    raw = _number_text(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingError(f"{name}={raw!r} is not a finite number")
    return value


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    admin_token: str | None
    production: bool
    # Beat schedule (seconds); short in the demo, a minute or more in production.
    receipt_poll_interval_s: float
    sweep_interval_s: float
    # An inbox row or a step that has not moved for this long is re-driven by the sweeper.
    stuck_after_s: float
    max_event_attempts: int
    # A Loop process call only queues work: after an unclear outcome, wait this long before
    # concluding from Loop's state that the call did not land.
    loop_settle_s: float
    # After a process / remove call, how long to keep re-reading Loop for its outcome (the
    # return closed, or a processing failure) before asking a person; and the longest gap
    # between two reads (they start at the settle time and double).
    loop_outcome_window_s: float
    loop_outcome_check_max_s: float
    receipt_lookback_days: float
    reconcile_interval_s: float
    loop_requests_per_minute: float
    # (connect, read) timeouts for every HTTP call to each system.
    loop_timeout: tuple[float, float]
    rlm_timeout: tuple[float, float]
    # Webhook bodies, their errors and timeline details are cleared after this many days
    # (integration.store.retention), checked every retention_interval_s.
    retention_days: float = 90.0
    retention_interval_s: float = 3600.0
    # At most this many RLM calls at once per merchant (RLM publishes no limit); one past it
    # is rescheduled, not waited for.
    rlm_max_concurrent: int = 8
    webhook_max_bytes: int = 1024 * 1024
    # OPERATOR_TOKENS: (name, token) per operator, each a login of the pages and API under that
    # name. Never shown: kept out of repr.
    operator_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)


# An operator's name, as the timeline and the logs give it (never a shopper's data).
OPERATOR_NAME = re.compile(r"[a-z0-9._-]{1,40}")
ADMIN_OPERATOR = "admin"  # who ADMIN_TOKEN acts as
MIN_OPERATOR_TOKEN = 16


def is_operator_name(name: str) -> bool:
    return OPERATOR_NAME.fullmatch(name) is not None


def parse_operator_tokens(raw: str | None, admin_token: str | None = None) -> tuple[tuple[str, str], ...]:
    """OPERATOR_TOKENS, "name:token,name2:token2", as (name, token) pairs. A malformed value is a
    SettingError naming the variable and the entry by its position, never quoting a token."""
    pairs: list[tuple[str, str]] = []
    for number, entry in enumerate((raw or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue  # a trailing comma
        where = f"OPERATOR_TOKENS entry {number}"
        name, colon, token = entry.partition(":")
        if not colon:
            raise SettingError(f"{where} is not name:token")
        if not is_operator_name(name):
            raise SettingError(f"{where}: the name must be 1 to 40 of a-z 0-9 . _ -")
        if name == ADMIN_OPERATOR:
            raise SettingError(f"{where}: the name {ADMIN_OPERATOR} is ADMIN_TOKEN's")
        if len(token) < MIN_OPERATOR_TOKEN or any(c.isspace() for c in token):
            raise SettingError(f"{where} ({name}): the token must be at least {MIN_OPERATOR_TOKEN} "
                               "characters without spaces (openssl rand -hex 32)")
        if any(name == known for known, _ in pairs):
            raise SettingError(f"{where}: {name} is listed twice")
        if token == admin_token or any(token == known for _, known in pairs):
            raise SettingError(f"{where} ({name}): the token is already ADMIN_TOKEN's or "
                               "another operator's")
        pairs.append((name, token))
    return tuple(pairs)


def load_settings() -> Settings:
    data_dir = Path(_env("DATA_DIR", "var")).resolve()
    database_url = _env("DATABASE_URL") or f"sqlite:///{data_dir / 'integration.db'}"
    # Heroku still hands out postgres:// URLs; SQLAlchemy wants postgresql+psycopg://.
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://"):]
    admin_token = _env("ADMIN_TOKEN")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=_env("REDIS_URL"),
        admin_token=admin_token,
        production=_env("APP_ENV", "development") == "production",
        # A minute: a shopper's refund waits on it (docs/benchmarks.md, *Receipt → Loop action
        # latency*), and an idle poll is one RLM request, 1,440 a day per merchant.
        receipt_poll_interval_s=env_float("RECEIPT_POLL_INTERVAL_S", 60.0),
        sweep_interval_s=env_float("SWEEP_INTERVAL_S", 60.0),
        stuck_after_s=env_float("STUCK_AFTER_S", 900.0),
        max_event_attempts=env_int("MAX_EVENT_ATTEMPTS", 8),
        loop_settle_s=env_float("LOOP_SETTLE_S", 60.0),
        # Six hours: longer than Loop's whole webhook retry schedule (six attempts with
        # exponential backoff), so a `return.processing.failed` for this call cannot still be on
        # its way when we ask a person; long enough for Loop's processing queue to drain after a
        # sale-day peak; short enough that a person sees it the same working day.
        loop_outcome_window_s=env_float("LOOP_OUTCOME_WINDOW_S", 6 * 3600.0),
        loop_outcome_check_max_s=env_float("LOOP_OUTCOME_CHECK_MAX_S", 1800.0),
        receipt_lookback_days=env_float("RECEIPT_LOOKBACK_DAYS", 45.0),
        reconcile_interval_s=env_float("RECONCILE_INTERVAL_S", 900.0),
        # Loop allows 300/min per key; stay a little under it.
        loop_requests_per_minute=env_float("LOOP_REQUESTS_PER_MINUTE", 285.0),
        loop_timeout=(env_float("HTTP_CONNECT_TIMEOUT_S", 5.0), env_float("LOOP_READ_TIMEOUT_S", 30.0)),
        # RLM's legacy services were seen to need long reads (docs/rlm-api.md A.2).
        rlm_timeout=(env_float("HTTP_CONNECT_TIMEOUT_S", 5.0), env_float("RLM_READ_TIMEOUT_S", 60.0)),
        retention_days=env_float("RETENTION_DAYS", 90.0),
        retention_interval_s=env_float("RETENTION_INTERVAL_S", 3600.0),
        rlm_max_concurrent=env_int("RLM_MAX_CONCURRENT", 8),
        operator_tokens=parse_operator_tokens(_env("OPERATOR_TOKENS"), admin_token),
    )
