"""Merchants kept as data: the `merchants` table (models.StoredMerchant).

A row holds what a TOML `[[merchants]]` entry holds: the non-secret keys as JSON, the secrets
(SECRET_KEYS) as one Fernet token under MERCHANT_KEYS (comma-separated Fernet keys: the first
encrypts, all decrypt, so a key is rotated by putting the new one first, then `rotate_keys`).
Every write is validated by the same schema as the TOML (integration.merchants.parse_merchants).

Which merchants are in effect (`in_effect`): with an empty (or no) table, today's TOML or
environment merchants; with rows, the table's enabled merchants plus the TOML merchants whose
names the table does not have (the table wins for its names; a merchant disabled in the table is
not run even if the TOML names it; the merchant built from LOOP_*/RLM_* is then not added).
`Refreshing` re-reads them when the table changed, checked at most every MERCHANTS_REFRESH_S.
No Flask, no Celery; nothing here logs or returns a secret in clear.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from integration.merchants import (
    ConfigError,
    Merchant,
    configured_from_environment,
    load_merchants,
    parse_merchants,
)
from integration.store.db import reading_engine
from integration.store.models import StoredMerchant

log = logging.getLogger(__name__)

SECRET_KEYS = ("loop_api_key", "rlm_key", "webhook_secrets")
KEYS_VAR = "MERCHANT_KEYS"


class UnknownMerchant(LookupError):
    """No stored merchant by that name."""


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


# --- keys ----------------------------------------------------------------------------------------
def keys_from_env() -> MultiFernet | None:
    """MERCHANT_KEYS as a MultiFernet; None when unset."""
    text = os.environ.get("MERCHANT_KEYS")
    return parse_keys(text) if text else None


def parse_keys(text: str) -> MultiFernet | None:
    found = []
    for index, key in enumerate(k.strip() for k in text.split(",") if k.strip()):
        try:
            found.append(Fernet(key))
        except (ValueError, TypeError):
            raise ConfigError(f"{KEYS_VAR}: key #{index + 1} is not a Fernet key "
                              "(32 url-safe base64-encoded bytes)") from None
    return MultiFernet(found) if found else None


def _require(keys: MultiFernet | None) -> MultiFernet:
    if keys is None:
        raise ConfigError(f"{KEYS_VAR} is not set: it is needed to encrypt and decrypt the stored "
                          "merchants' secrets")
    return keys


def _encrypt(keys: MultiFernet | None, secrets: dict) -> str:
    return _require(keys).encrypt(json.dumps(secrets, sort_keys=True).encode()).decode()


def _decrypt(keys: MultiFernet | None, token: str, name: str) -> dict:
    try:
        return json.loads(_require(keys).decrypt(token.encode()))
    except InvalidToken:
        raise ConfigError(f"merchant {name}: no key in {KEYS_VAR} decrypts its secrets") from None


def mask(secret: str) -> str:
    """Enough to tell two secrets apart, never enough to use one: the last 4 characters of a long one."""
    return "****" + secret[-4:] if len(secret) >= 12 else "****"


# --- rows ----------------------------------------------------------------------------------------
def _row(session: Session, name: str) -> StoredMerchant:
    row = session.scalar(select(StoredMerchant).where(StoredMerchant.name == name))
    if row is None:
        raise UnknownMerchant(f"no stored merchant {name}")
    return row


def _full_config(row: StoredMerchant, keys: MultiFernet | None) -> dict:
    return {**row.config, **_decrypt(keys, row.secrets, row.name)}


def save(session: Session, merchant_config: dict, keys: MultiFernet | None) -> str:
    """Add or replace one merchant (validated first): "added", "updated" or "unchanged".
    Does not change whether it is enabled; commits."""
    merchant = parse_merchants([merchant_config])  # ConfigError naming the key
    name = next(iter(merchant))
    public = {k: v for k, v in merchant_config.items() if k not in SECRET_KEYS}
    secrets = {k: merchant_config[k] for k in SECRET_KEYS if k in merchant_config}
    _require(keys)
    row = session.scalar(select(StoredMerchant).where(StoredMerchant.name == name))
    if row is None:
        session.add(StoredMerchant(name=name, enabled=True, config=public,
                                   secrets=_encrypt(keys, secrets), version=1))
        outcome = "added"
    elif row.config == public and _decrypt(keys, row.secrets, name) == secrets:
        return "unchanged"
    else:
        row.config, row.secrets, row.version = public, _encrypt(keys, secrets), row.version + 1
        outcome = "updated"
    session.commit()
    return outcome


def update(session: Session, name: str, changes: dict[str, object], keys: MultiFernet | None) -> str:
    """Set keys (`criteria.expiry_days` reaches into a table) on a stored merchant, validated."""
    config = _full_config(_row(session, name), keys)
    for path, value in changes.items():
        if path == "name":
            raise ConfigError("name: a stored merchant cannot be renamed (import it under the new name)")
        *parents, last = path.split(".")
        target = config
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{path}: {part} is not a table")
        target[last] = value
    return save(session, config, keys)


def set_enabled(session: Session, name: str, enabled: bool) -> bool:
    """Whether anything changed; commits."""
    row = _row(session, name)
    if row.enabled == enabled:
        return False
    row.enabled, row.version = enabled, row.version + 1
    session.commit()
    return True


def disable(session: Session, name: str) -> bool:
    return set_enabled(session, name, False)


def rotate_keys(session: Session, keys: MultiFernet | None) -> int:
    """Re-encrypt every row's secrets with the first key of MERCHANT_KEYS; how many rows."""
    rows = list(session.scalars(select(StoredMerchant)))
    for row in rows:
        try:
            row.secrets = _require(keys).rotate(row.secrets.encode()).decode()
        except InvalidToken:
            raise ConfigError(f"merchant {row.name}: no key in {KEYS_VAR} decrypts its secrets") from None
    session.commit()
    return len(rows)


def load_all(session: Session, keys: MultiFernet | None, include_disabled: bool = False) -> dict[str, Merchant]:
    query = select(StoredMerchant).order_by(StoredMerchant.name)
    if not include_disabled:
        query = query.where(StoredMerchant.enabled.is_(True))
    merchants: dict[str, Merchant] = {}
    for row in session.scalars(query):
        full = _full_config(row, keys)  # its errors name MERCHANT_KEYS
        try:
            merchants.update(parse_merchants([full]))
        except ConfigError as exc:
            raise ConfigError(f"stored merchant {row.name}: {str(exc).partition(': ')[2]}") from None
    return merchants


def stored_names(session: Session) -> dict[str, bool]:
    """Every stored merchant's name, and whether it is enabled."""
    rows = session.execute(select(StoredMerchant.name, StoredMerchant.enabled))
    return {row.name: row.enabled for row in rows}


def show(session: Session, name: str, keys: MultiFernet | None) -> dict:
    """The stored configuration with every secret masked (needs the keys: masks are of the real values)."""
    row = _row(session, name)
    config = _full_config(row, keys)
    for key in SECRET_KEYS:
        if key == "webhook_secrets":
            config[key] = [mask(s) for s in config.get(key, [])]
        elif key in config:
            config[key] = mask(str(config[key]))
    return {"name": row.name, "enabled": row.enabled, "version": row.version,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None, "config": config}


def import_toml(session: Session, text: str, keys: MultiFernet | None) -> ImportResult:
    """Save every `[[merchants]]` entry of a TOML text; all are validated before any is saved.
    Importing the same text again changes nothing."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not TOML: {exc}") from None
    entries = doc.get("merchants")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("no [[merchants]] table")
    parse_merchants(entries)
    _require(keys)
    result = ImportResult()
    for entry in entries:
        getattr(result, save(session, entry, keys)).append(entry["name"])
    return result


# --- what the processes run with -------------------------------------------------------------------
def table_exists(database_url: str) -> bool:
    """Whether the database has the merchants table; a SQLite file that does not exist is not created."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            return False
    with reading_engine(database_url).connect() as conn:
        return inspect(conn).has_table(StoredMerchant.__tablename__)


def signature(database_url: str) -> tuple[int, int]:
    """(rows, sum of versions): changes whenever a merchant is added, changed, enabled or disabled."""
    if not table_exists(database_url):
        return (0, 0)
    with reading_engine(database_url).connect() as conn:
        count, total = conn.execute(select(func.count(), func.coalesce(func.sum(StoredMerchant.version), 0))
                                    .select_from(StoredMerchant)).one()
    return (int(count), int(total))


def in_effect(database_url: str, keys: MultiFernet | None = None) -> dict[str, Merchant]:
    """The merchants a process runs with (see the module's docstring)."""
    if signature(database_url)[0] == 0:
        return load_merchants()
    keys = keys or keys_from_env()
    # Read without keeping a pooled connection: beat and a worker's main process read merchants
    # but run no query otherwise (docs/operations.md, *Connection budget*).
    with Session(reading_engine(database_url)) as session:
        names = stored_names(session)
        stored = load_all(session, keys)
    from_file = {} if configured_from_environment() else load_merchants()
    return {**{n: m for n, m in from_file.items() if n not in names}, **stored}


class Refreshing:
    """The merchants in effect, read again when `changed_since` says so, asked at most every
    `refresh_s` seconds. The first load's error is raised (a bad configuration stops the process);
    a later one keeps the merchants already loaded and is logged (by its type: no values)."""

    def __init__(self, mark: Callable[[], object], load: Callable[[], dict[str, Merchant]],
                 refresh_s: float, clock: Callable[[], float] = time.monotonic):
        self._mark, self._load, self._refresh_s, self._clock = mark, load, refresh_s, clock
        self._lock = threading.Lock()
        self._value: dict[str, Merchant] | None = None
        self._seen: object = None
        self._next_check = 0.0

    def get(self) -> dict[str, Merchant]:
        with self._lock:
            now = self._clock()
            if self._value is not None and now < self._next_check:
                return self._value
            self._next_check = now + self._refresh_s
            try:
                seen = self._mark()
                if self._value is None or seen != self._seen:
                    self._value, self._seen = self._load(), seen
            except Exception as exc:
                if self._value is None:
                    raise
                log.warning("merchants.refresh_failed error=%s (keeping the merchants loaded)",
                            type(exc).__name__)
            return self._value
