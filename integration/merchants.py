"""Per-merchant configuration: Loop and RLM connections, mappings and decision criteria.

Merchants come from TOML (MERCHANTS_TOML, or a file named by MERCHANTS_FILE); without either,
one merchant is built from the environment: named by MERCHANT_NAME (default `demo`) and
pointing at the local sandboxes unless LOOP_* and RLM_* say otherwise.
Everything is validated with marshmallow at start-up so a bad value stops the service with a
message naming the key.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from integration.settings import SettingError, env_float, env_int

CONDITIONS = ("GOOD", "DAMAGED", "DEFECTIVE", "WRONG_ITEM", "MISSING_TAGS")
# live: decisions are sent to Loop. shadow: everything runs but nothing is sent to Loop; each
# decision is recorded and compared with what a person then does (integration/workflow/shadow.py).
LIVE, SHADOW = "live", "shadow"
MODES = (LIVE, SHADOW)
DEFAULT_REASON_CODES = {
    "too small": "TOO_SMALL",
    "too large": "TOO_LARGE",
    "too big": "TOO_LARGE",
    "defective": "DEFECTIVE",
    "damaged": "DEFECTIVE",
    "not as described": "NOT_AS_DESCRIBED",
    "changed my mind": "CHANGED_MIND",
    "wrong item": "WRONG_ITEM",
}


class ConfigError(Exception):
    """The merchant configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class Criteria:
    accepted_conditions: tuple[str, ...] = ("GOOD",)
    partial_grace_s: float = 72 * 3600
    on_missing: str = "flag"  # or "remove_and_process"
    flag_unexpected: bool = True
    flag_over_received: bool = True
    value_threshold: Decimal | None = None
    expiry_days: float = 30
    on_expiry: str = "flag"  # or "close"
    grade_in_loop: bool = False


@dataclass(frozen=True)
class Merchant:
    name: str
    loop_base_url: str
    loop_api_version: str
    loop_api_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    rlm_base_url: str
    rlm_company: int
    rlm_username: str
    rlm_key: str = field(repr=False)
    division_number: int
    warehouse_number: int
    customer_number: str
    store_number: int | None
    rlm_auto_transmit: bool
    timezone: str
    reason_codes: dict[str, str]
    sku_pattern: str
    criteria: Criteria
    mode: str = LIVE
    # The shop's Loop setting "allow processing flagged returns": then Loop would process a
    # return a person has just flagged, so we read its state before processing (one more call).
    loop_processes_flagged: bool = False

    def reason_code_for(self, reason: str | None) -> str:
        return self.reason_codes.get((reason or "").strip().lower(), "OTHER")


def _known_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}") from None


class CriteriaSchema(Schema):
    class Meta:
        unknown = RAISE  # a misspelt criterion must not silently fall back to its default

    accepted_conditions = fields.List(
        fields.String(validate=validate.OneOf(CONDITIONS)), load_default=["GOOD"]
    )
    partial_grace_s = fields.Float(load_default=72 * 3600, validate=validate.Range(min=0))
    on_missing = fields.String(
        load_default="flag", validate=validate.OneOf(["flag", "remove_and_process"])
    )
    flag_unexpected = fields.Boolean(load_default=True)
    flag_over_received = fields.Boolean(load_default=True)
    value_threshold = fields.Decimal(load_default=None, allow_none=True, as_string=False)
    expiry_days = fields.Float(load_default=30, validate=validate.Range(min=0))
    on_expiry = fields.String(load_default="flag", validate=validate.OneOf(["flag", "close"]))
    grade_in_loop = fields.Boolean(load_default=False)

    @post_load
    def build(self, data, **_):
        data["accepted_conditions"] = tuple(data["accepted_conditions"])
        return Criteria(**data)


class MerchantSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9_-]*$"))
    loop_base_url = fields.Url(required=True, require_tld=False)
    loop_api_version = fields.String(load_default="v1")
    loop_api_key = fields.String(required=True, validate=validate.Length(min=1))
    webhook_secrets = fields.List(
        fields.String(validate=validate.Length(min=1)), required=True, validate=validate.Length(min=1)
    )
    rlm_base_url = fields.Url(required=True, require_tld=False)
    rlm_company = fields.Integer(required=True)
    rlm_username = fields.String(required=True)
    rlm_key = fields.String(required=True)
    division_number = fields.Integer(required=True)
    warehouse_number = fields.Integer(required=True)
    customer_number = fields.String(load_default="WEB0000")
    store_number = fields.Integer(load_default=None, allow_none=True)
    rlm_auto_transmit = fields.Boolean(load_default=False)
    timezone = fields.String(load_default="UTC", validate=_known_timezone)
    reason_codes = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    sku_pattern = fields.String(load_default="{style}-{color}-{size}")
    criteria = fields.Nested(CriteriaSchema, load_default=lambda: Criteria())
    mode = fields.String(load_default=LIVE, validate=validate.OneOf(MODES))
    loop_processes_flagged = fields.Boolean(load_default=False)

    @post_load
    def build(self, data, **_):
        reasons = dict(DEFAULT_REASON_CODES)
        reasons.update({k.strip().lower(): v for k, v in data["reason_codes"].items()})
        data["reason_codes"] = reasons
        data["webhook_secrets"] = tuple(data["webhook_secrets"])
        data["loop_base_url"] = data["loop_base_url"].rstrip("/")
        data["rlm_base_url"] = data["rlm_base_url"].rstrip("/")
        return Merchant(**data)


def parse_merchants(raw: list[dict]) -> dict[str, Merchant]:
    merchants: dict[str, Merchant] = {}
    for index, entry in enumerate(raw):
        try:
            merchant = MerchantSchema().load(entry)
        except ValidationError as exc:
            raise ConfigError(f"merchant #{index + 1}: {_describe(exc.messages)}") from None
        if merchant.name in merchants:
            raise ConfigError(f"merchant #{index + 1}: name {merchant.name!r} is used twice")
        merchants[merchant.name] = merchant
    return merchants


def _describe(messages, prefix: str = "") -> str:
    parts = []
    for key, value in messages.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            parts.append(_describe(value, path + "."))
        else:
            parts.append(f"{path}: {' '.join(map(str, value))}")
    return "; ".join(parts)


def configured_from_environment() -> bool:
    """Whether the merchant is built from LOOP_*/RLM_* variables rather than from TOML."""
    return not os.environ.get("MERCHANTS_TOML") and not os.environ.get("MERCHANTS_FILE")


def demo_merchant_config() -> dict:
    """The merchant built from the environment; every value defaults to the local sandboxes."""
    env = os.environ.get
    secrets = env("LOOP_WEBHOOK_SECRETS") or env("LOOP_WEBHOOK_SECRET") or "demo-webhook-secret"
    try:
        criteria: dict[str, float | str] = {
            "partial_grace_s": env_float("PARTIAL_GRACE_S", 72 * 3600.0),
            "expiry_days": env_float("RMA_EXPIRY_DAYS", 30.0)}
        numbers = {"rlm_company": env_int("RLM_COMPANY", 90),
                   "division_number": env_int("RLM_DIVISION", 10),
                   "warehouse_number": env_int("RLM_WAREHOUSE", 1)}
    except SettingError as exc:
        raise ConfigError(str(exc)) from None
    if threshold := env("RETURN_VALUE_THRESHOLD"):
        criteria["value_threshold"] = threshold
    return {
        "name": env("MERCHANT_NAME") or "demo",
        "loop_base_url": env("LOOP_BASE_URL", "http://127.0.0.1:8001"),
        "loop_api_key": env("LOOP_API_KEY", "demo-loop-key"),
        "webhook_secrets": [s.strip() for s in secrets.split(",") if s.strip()],
        "rlm_base_url": env("RLM_BASE_URL", "http://127.0.0.1:8002"),
        "rlm_username": env("RLM_USERNAME", "demo"),
        "rlm_key": env("RLM_KEY", "demo-rlm-key"),
        **numbers,
        "criteria": criteria,
    }


def load_merchants() -> dict[str, Merchant]:
    """From MERCHANTS_TOML (the file's text in a config var, so keys stay out of the code) or
    MERCHANTS_FILE; with neither, the built-in sandbox merchant."""
    text, path = os.environ.get("MERCHANTS_TOML"), os.environ.get("MERCHANTS_FILE")
    if configured_from_environment():
        return parse_merchants([demo_merchant_config()])
    where = "MERCHANTS_TOML" if text else f"MERCHANTS_FILE {path}"
    try:
        if text:
            doc = tomllib.loads(text)
        else:
            assert path  # with neither set we returned above
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(doc.get("merchants"), list) or not doc["merchants"]:
        raise ConfigError(f"{where}: no [[merchants]] table")
    return parse_merchants(doc["merchants"])
