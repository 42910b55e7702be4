"""What we accept from Loop's webhooks: validation, PII minimisation and dedupe keys."""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from integration.workflow.mapping import ship_from

RETURN_TOPIC = "return"
PROCESSING_TOPIC = "return.processing"
KNOWN_TOPICS = {
    RETURN_TOPIC: {"return.created", "return.updated", "return.closed"},
    PROCESSING_TOPIC: {"return.processing.failed"},
    "label": {"label.created", "label.updated", "label.requested", "label.closed"},
    "restock": {"restock.requested"},
}
# Topics we act on; the others are stored as `ignored`.
HANDLED_TOPICS = {RETURN_TOPIC, PROCESSING_TOPIC}
# The webhooks a merchant's Loop account must send us: `doctor` checks them, the local stack
# subscribes its Loop sandbox to them.
WEBHOOK_TRIGGERS = {
    RETURN_TOPIC: ["return.created", "return.updated", "return.closed"],
    PROCESSING_TOPIC: ["return.processing.failed"],
}


class LoopId(fields.Field):
    """Loop sends ids as numbers or strings, unpredictably: normalise to str."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("must be a string or an integer id")
        text = str(value).strip()
        # Printable only: an id is a key in our tables, and PostgreSQL cannot store a NUL.
        if not text or len(text) > 32 or not text.isprintable():
            raise ValidationError("must be a non-empty id of at most 32 printable characters")
        return text


class ZipCode(fields.Field):
    """Loop sends the zip code as a string or a number."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("must be a string or a number")
        return str(value)


class Money(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, bool):
            return None
        if not isinstance(value, (int, float, str)):
            raise ValidationError("must be a money amount")
        return str(value)


class LineItemSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    line_item_id = LoopId(required=True)
    provider_line_item_id = LoopId(load_default=None, allow_none=True)
    sku = fields.String(load_default="", allow_none=True)
    barcode = fields.String(load_default="", allow_none=True)
    title = fields.String(load_default="", allow_none=True)
    price = Money(load_default="0.00", allow_none=True)
    discount = Money(load_default="0.00", allow_none=True)
    return_reason = fields.String(load_default=None, allow_none=True)
    parent_return_reason = fields.String(load_default=None, allow_none=True)


class AddressSchema(Schema):
    """Only what RLM's ship-from needs (mapping.ship_from); the rest is never loaded."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(load_default=None, allow_none=True)
    address1 = fields.String(load_default=None, allow_none=True)
    address2 = fields.String(load_default=None, allow_none=True)
    city = fields.String(load_default=None, allow_none=True)
    state = fields.String(load_default=None, allow_none=True)
    zip = ZipCode(load_default=None, allow_none=True)
    country_code = fields.String(load_default=None, allow_none=True)


class LoopEventSchema(Schema):
    """The fields we need from any Loop webhook; Loop adds fields without notice."""

    class Meta:
        unknown = EXCLUDE

    topic = fields.String(required=True, validate=validate.OneOf(sorted(KNOWN_TOPICS)))
    trigger = fields.String(required=True)
    id = LoopId(load_default=None, allow_none=True)
    return_id = LoopId(load_default=None, allow_none=True)
    state = fields.String(load_default=None, allow_none=True)
    return_state = fields.String(load_default=None, allow_none=True)
    created_at = fields.String(load_default=None, allow_none=True)
    updated_at = fields.String(load_default=None, allow_none=True)
    edited_at = fields.String(load_default=None, allow_none=True)
    label_updated_at = fields.String(load_default=None, allow_none=True)
    order_name = fields.String(load_default=None, allow_none=True)
    currency = fields.String(load_default=None, allow_none=True)
    total = Money(load_default=None, allow_none=True)
    message = fields.String(load_default=None, allow_none=True)
    source = fields.String(load_default=None, allow_none=True)
    line_items = fields.List(fields.Nested(LineItemSchema), load_default=list)
    address = fields.Nested(AddressSchema, load_default=None, allow_none=True)

    @validates_schema
    def _check(self, data, **_):
        topic = data["topic"]
        if data["trigger"] not in KNOWN_TOPICS[topic]:
            raise ValidationError(f"unknown trigger for topic {topic}", "trigger")
        if topic == PROCESSING_TOPIC and data.get("return_id") is None:
            raise ValidationError("required for return.processing events", "return_id")
        if topic != PROCESSING_TOPIC and data.get("id") is None:
            raise ValidationError("required", "id")


# Built once: building a schema costs more than loading an event with it, and load() keeps
# no state on the instance.
_SCHEMA = LoopEventSchema()


class InvalidEvent(ValueError):
    """A signed body that is not JSON, or not a usable Loop event; the text says why (field
    messages as JSON), never quoting the body."""


def read_body(raw: bytes) -> dict:
    """A stored webhook body as its validated, PII-free event (parse_event); InvalidEvent if it
    is not standard JSON or not a usable Loop event."""
    try:
        payload = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidEvent("body is not valid JSON") from None
    try:
        return parse_event(payload)
    except ValidationError as exc:
        raise InvalidEvent(json.dumps(exc.messages)[:2000]) from None


def _not_json(constant: str):
    """Standard JSON only: Python's NaN and Infinity are refused like any other non-JSON."""
    raise ValueError(f"{constant} is not JSON")


def parse_event(payload: Any) -> dict:
    """Validated, PII-free event dict; raises ValidationError with field messages."""
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object")
    event = _storable(_SCHEMA.load(payload))
    # Only what RLM needs of the address is kept, and only until the RA exists.
    address = event.pop("address", None)
    if event["trigger"] == "return.created" and address:
        event["ship_from"] = ship_from(address)
    event["loop_return_id"] = event["return_id"] if event["topic"] == PROCESSING_TOPIC else event["id"]
    return event


# NUL and lone UTF-16 surrogates: valid in JSON, but neither PostgreSQL text nor UTF-8 holds them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """The same data with strings any database, log or page can hold (U+FFFD for the rest)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def dedupe_key(event: dict, raw: bytes) -> str:
    """Loop sends no delivery id: the same event re-sent has the same identifying fields.

    Keyed on (topic, trigger, return id, state, edited_at, label_updated_at) plus, for events
    that carry no change marker, the body hash, as docs/loop-api.md §5.2 advises.
    """
    parts = [event["topic"], event["trigger"], event["loop_return_id"] or "",
             event.get("state") or event.get("return_state") or "",
             event.get("edited_at") or "", event.get("label_updated_at") or "",
             event.get("updated_at") or ""]
    if event["topic"] == PROCESSING_TOPIC:
        # A second processing failure (after a retry) is byte-for-byte the first one: nothing
        # tells a new failure from a re-delivery, so every delivery is kept. Handling it again
        # is harmless (a return already parked only gets a timeline note); dropping one could
        # leave a return waiting for an outcome that already came.
        parts.append(secrets.token_hex(16))
    elif not any(parts[4:]):
        parts.append(hashlib.sha256(raw).hexdigest())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
