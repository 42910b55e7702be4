"""In-memory model of Loop returns: settings, clock, records, the action state machine and the list query.

No Flask here: app.py turns HTTP requests into calls on `ReturnStore`; webhooks.py sends what the store emits.
Section numbers (§) refer to docs/loop-api.md.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.common import is_int, is_number

STATES = ("open", "review", "closed", "cancelled", "expired")
DEFAULT_LIST_STATES = ("open", "closed", "expired")  # §3.2: review and cancelled only when asked for
ADMIN_STATES = ("cancelled", "expired", "closed", "review")
MAX_LIST_SPAN = dt.timedelta(days=120)
MAX_PAGE_SIZE = 750
NOTE_LIMIT = 255  # content must be shorter than this

TRUE = "true"  # Loop's success body for actions is the JSON string "true"
NOT_FOUND = {"errors": {"code": "NOT_FOUND"}}
FLAGGED_REFUSAL = {"errors": {"message": "Return is flagged and therefore cannot be processed.",
                              "code": "UNPROCESSABLE_FLAGGED_RETURN"}}
NOTE_REFUSAL = {"errors": {"message": "Content is required and must be less than 255 characters."}}


class Invalid(Exception):
    """A request Loop would answer with 422 `{"message": ..., "errors": {...}}`."""

    def __init__(self, message: str, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors if errors is not None else {}

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors}


def field_error(name: str, message: str) -> Invalid:
    return Invalid(message, {name: [message]})


# --- settings -------------------------------------------------------------------------------------

MAX_DELAY_S = 86_400.0  # a day: longer waits only tie up timers (and overflow the clock)


def _is_seconds(v: Any, maximum: float = MAX_DELAY_S) -> bool:
    return is_number(v) and 0 <= v <= maximum


def _is_fail_mode(v: Any) -> bool:
    """True/false, a list of return ids (every attempt fails) or {"<return id>": n} (the first n fail)."""
    if isinstance(v, bool):
        return True
    if isinstance(v, list):
        return all(is_int(i) for i in v)
    return isinstance(v, dict) and all(_is_id_text(k) and is_int(n) and n >= 0 for k, n in v.items())


def _is_id_text(text: str) -> bool:
    """ASCII digits short enough for an id (int() takes other digits too, and balks at 4300 of them)."""
    return text.isascii() and text.isdigit() and len(text) <= 19


def _is_range(v: Any, required: set[str], optional: set[str]) -> bool:
    """An object of seconds with exactly `required` (+ any of `optional`) keys, min_s <= median_s <= max_s."""
    if not isinstance(v, dict) or not required <= set(v) <= required | optional:
        return False
    seconds = [v[k] for k in ("min_s", "median_s", "max_s") if k in v]
    return all(_is_seconds(x) for x in seconds) and seconds == sorted(seconds) and v.get("median_s", 1) > 0


def _is_delay(v: Any) -> bool:
    return _is_seconds(v) or _is_range(v, {"min_s", "max_s"}, {"median_s"})


SCOPES = ("returns", "developer_tools")  # Loop's Returns and Developer Tools scopes (§1)
WEBHOOK_TOPICS = ("return", "label", "return.processing", "restock")


def _is_key_scopes(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(s, list) and all(x in SCOPES for x in s) for k, s in v.items())


def _is_webhook_delay(v: Any) -> bool:
    return v is None or (_is_range(v, {"min_s", "max_s"}, {"probability"})
                         and (is_number(v.get("probability", 1)) and 0 <= v.get("probability", 1) <= 1))


SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "api_keys": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(k, str) and k for k in v),
                 "must be a non-empty list of strings"),
    "rate_limit_per_minute": (lambda v: is_int(v) and 1 <= v <= 1_000_000, "must be an integer from 1 to 1000000"),
    "rate_limit_retry_after": (lambda v: isinstance(v, bool), "must be a boolean"),
    "rate_limit_window_s": (lambda v: _is_seconds(v) and v > 0, "must be a number of seconds > 0 and <= 86400"),
    "refusal_status": (lambda v: is_int(v) and v in (200, 422), "must be 200 or 422"),
    "process_delay_s": (_is_delay, ('must be seconds (0 to 86400) or {"min_s": a, "max_s": b} with an optional '
                                    '"median_s" (log-normal), 0 <= min_s <= median_s <= max_s <= 86400, median_s > 0')),
    "allow_flagged_process": (lambda v: isinstance(v, bool), "must be a boolean"),
    "processing_fails": (_is_fail_mode, 'must be a boolean, a list of return ids or {"<return id>": n >= 0}'),
    "processing_failure_rate": (lambda v: is_number(v) and 0 <= v <= 1, "must be a number from 0 to 1"),
    "processing_failure_repeat": (lambda v: is_int(v) and 1 <= v <= 1000, "must be an integer from 1 to 1000"),
    "webhook_secret": (lambda v: isinstance(v, str) and bool(v), "must be a non-empty string"),
    "webhook_retry_base_s": (lambda v: _is_seconds(v, 3600), "must be a number of seconds from 0 to 3600"),
    "webhook_timeout_s": (lambda v: _is_seconds(v, 600) and v > 0, "must be a number of seconds > 0 and <= 600"),
    "webhook_delay": (_is_webhook_delay, ('must be null or {"probability": p, "min_s": a, "max_s": b}, '
                                          '0 <= p <= 1 (default 1), 0 <= a <= b <= 86400')),
    "duplicate_deliveries": (lambda v: is_int(v) and 1 <= v <= 100, "must be an integer from 1 to 100"),
    "shop_id": (lambda v: is_int(v) and 1 <= v < 2**63, "must be a positive 64-bit integer"),
    "timeout_hang_s": (lambda v: _is_seconds(v, 3600), "must be a number of seconds from 0 to 3600"),
    "seed": (lambda v: v is None or is_int(v), "must be null or an integer"),
    "api_key_scopes": (_is_key_scopes, 'must be {"<api key>": ["returns" and/or "developer_tools"]}'),
    "refused_topics": (lambda v: isinstance(v, list) and all(t in WEBHOOK_TOPICS for t in v),
                       f"must be a list of webhook topics ({', '.join(WEBHOOK_TOPICS)})"),
}


def default_settings() -> dict[str, Any]:
    return {
        "api_keys": [os.environ.get("LOOP_API_KEY") or "demo-loop-key"],
        "rate_limit_per_minute": 300,
        "rate_limit_retry_after": False,
        "rate_limit_window_s": 60.0,  # Loop counts per minute; tests shrink the window to compress time
        "refusal_status": 200,
        "process_delay_s": 2.0,  # or {"min_s", "median_s", "max_s"}: drawn per processing job
        "allow_flagged_process": False,
        "processing_fails": False,
        "processing_failure_rate": 0.0,  # share of returns whose processing fails at first (seeded)
        "processing_failure_repeat": 2,  # how many attempts of such a return fail before one succeeds
        "webhook_secret": os.environ.get("LOOP_WEBHOOK_SECRET") or "demo-webhook-secret",
        "webhook_retry_base_s": 5.0,
        "webhook_timeout_s": 10.0,
        "webhook_delay": None,  # or {"probability", "min_s", "max_s"}: some deliveries held back
        "duplicate_deliveries": 1,
        "shop_id": 12345,
        "timeout_hang_s": 90.0,  # how long a `"timeout": true` fault holds the answer
        "seed": None,  # seeds the draws above (not fault rules: POST /_sim/faults {"seed": N})
        # A key's scopes (§1: Returns, Developer Tools); a key not named here has both.
        "api_key_scopes": {},
        # Topics this account refuses to subscribe (422, §3.6), as an older account refuses
        # `return.processing` (§5.1).
        "refused_topics": [],
    }


class Settings:
    """The sandbox's knobs: given to create_app, changed at runtime by POST /_sim/config."""

    def __init__(self, overrides: Mapping[str, Any] | None = None):
        self._initial = {**default_settings(), **self.validated(overrides or {})}
        self._values = dict(self._initial)
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        valid = self.validated(changes)
        with self._lock:
            self._values.update(valid)
        return self.snapshot()

    def reset(self) -> None:
        with self._lock:
            self._values = dict(self._initial)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._values))

    @staticmethod
    def validated(changes: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(changes, Mapping):
            raise Invalid("Settings must be a JSON object.")
        values = dict(changes)
        if isinstance(values.get("api_keys"), str):  # one key is a common shorthand
            values["api_keys"] = [values["api_keys"]]
        errors = {}
        for key, value in values.items():
            rule = SETTING_RULES.get(key)
            if rule is None:
                errors[key] = ["unknown setting"]
            elif not rule[0](value):
                errors[key] = [rule[1]]
        if errors:
            raise Invalid("Invalid settings.", errors)
        return values


class Dice:
    """Seeded draws for the settings that make the sandbox random (processing delays and failures,
    held-back webhooks). Each draw is keyed by what it decides (a return's n-th processing job, a
    delivery), so with the same `seed` a return gets the same luck whatever else runs meanwhile.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._entropy = random.randrange(1 << 62)  # while `seed` is null

    def rng(self, *key: Any) -> random.Random:
        seed = self._settings["seed"]
        return random.Random(":".join(map(str, (self._entropy if seed is None else seed, *key))))

    def chance(self, *key: Any) -> float:
        return self.rng(*key).random()


def draw_seconds(spec: float | dict[str, float], rng: random.Random) -> float:
    """A fixed delay, or one drawn from {"min_s", "max_s"}: uniform, or with "median_s" log-normal
    through that median with max_s at its 99th percentile, clipped to [min_s, max_s]."""
    if not isinstance(spec, dict):
        return float(spec)
    low, high = spec["min_s"], spec["max_s"]
    if "median_s" not in spec:
        return rng.uniform(low, high)
    median = spec["median_s"]
    sigma = math.log(high / median) / 2.326
    return min(high, max(low, rng.lognormvariate(math.log(median), sigma)))


# --- clock and formatting -------------------------------------------------------------------------

class Clock:
    """Wall clock plus an adjustable offset, so tests can jump in time while time keeps flowing."""

    def __init__(self) -> None:
        self._offset = dt.timedelta()
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            offset = self._offset
        # Whole seconds: the API shows timestamps to the second, so filters must agree with what clients see.
        return (dt.datetime.now(dt.UTC) + offset).replace(microsecond=0)

    def precise(self) -> float:
        """The same time as `now`, unrounded, in seconds since the epoch: for the sandbox's own
        ledger (`make bench` times our calls by it), never shown by the API."""
        with self._lock:
            offset = self._offset
        return (dt.datetime.now(dt.UTC) + offset).timestamp()

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self._offset = when - dt.datetime.now(dt.UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += dt.timedelta(seconds=seconds)

    def reset(self) -> None:
        with self._lock:
            self._offset = dt.timedelta()


def naive(ts: dt.datetime) -> str:
    """Details/list timestamps: `2023-08-22 14:08:31` (UTC, no zone)."""
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: dt.datetime) -> str:
    """Webhook and note timestamps: `2024-03-12T15:04:05Z`."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# Sandbox times stay between these, so date arithmetic (list windows, cursors) never overflows.
EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
MAX_SHIFT_S = 3e11  # about 9500 years: any longer move leaves the range anyway


def parse_time(value: str) -> dt.datetime:
    """Accept `2023-01-01 00:00:00` or ISO 8601 (`2023-01-01T00:00:00.000Z`); both read as UTC.

    ValueError if unreadable or outside the sandbox's years.
    """
    try:
        if "T" in value:
            parsed = dt.datetime.fromisoformat(value)
        else:
            parsed = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        parsed = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed
        parsed = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: a zone offset past year 1 or 9999
        raise ValueError(value) from None
    if not EARLIEST <= parsed <= LATEST:
        raise ValueError(value)
    return parsed


def shifted(moment: dt.datetime, seconds: Any) -> dt.datetime | None:
    """`moment` moved by `seconds`, or None if that is not a number or leaves the sandbox's years."""
    if not is_number(seconds) or abs(seconds) >= MAX_SHIFT_S:
        return None
    moved = moment + dt.timedelta(seconds=seconds)
    return moved if EARLIEST <= moved <= LATEST else None


CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidOperation(value)
    return Decimal(str(value)).quantize(CENT)


def fmt(amount: Decimal) -> str:
    return f"{amount:.2f}"


US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts",
    "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico",
    "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington",
    "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}

DEFAULT_CUSTOMER = {"email": "jane.doe@example.com", "first_name": "Jane", "middle_name": "", "last_name": "Doe"}
DEFAULT_ADDRESS = {"company": "", "address1": "123 Main St", "address2": "", "city": "Brooklyn",
                   "state": "New York", "zip": "11201", "country": "United States", "country_code": "US",
                   "phone": ""}


# --- records --------------------------------------------------------------------------------------

@dataclass
class LineItem:
    """One returned unit (Loop has no quantity field)."""

    line_item_id: int
    provider_line_item_id: int
    product_id: int
    variant_id: int
    sku: str
    barcode: str
    title: str
    price: Decimal
    discount: Decimal
    tax: Decimal
    return_reason: str
    parent_return_reason: str | None
    outcome: str

    @property
    def refund(self) -> Decimal:
        return Decimal("0.00") if self.outcome == "exchange" else self.price - self.discount + self.tax


@dataclass
class ReturnRecord:
    id: int
    shop_id: int
    order_id: int
    order_name: str
    order_number: int
    provider_order_id: int
    customer: dict[str, str]
    address: dict[str, str]
    currency: str
    line_items: list[LineItem]
    created_at: dt.datetime
    updated_at: dt.datetime
    state: str = "open"
    edited_at: dt.datetime | None = None
    removed_line_items: list[LineItem] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # every API action, refused or not
    history: list[dict[str, Any]] = field(default_factory=list)  # every state change and its cause
    process_data: dict[str, Any] = field(default_factory=dict)
    processing_jobs: list[dict[str, Any]] = field(default_factory=list)  # {queued_at, delay_s, outcome}

    @property
    def processing_pending(self) -> int:
        return sum(job["outcome"] == "pending" for job in self.processing_jobs)

    @property
    def processing_failed(self) -> int:
        return sum(job["outcome"] == "failed" for job in self.processing_jobs)

    def status_page_url(self) -> str:
        token = hashlib.sha1(str(self.id).encode()).hexdigest()[:8]
        return f"https://example.loopreturns.com/#/return/{token}"


@dataclass
class Outcome:
    """Result of an action: `body` goes out as JSON with `status`."""

    ok: bool
    body: Any
    status: int = 200


# --- views ----------------------------------------------------------------------------------------

Typed = Callable[..., Any]


def _api_ids(name: str, value: Any, index: int = 0) -> Any:
    return int(value)


def _webhook_ids(return_id: int) -> Typed:
    """Webhook id typing: Loop mixes str and int; vary it by return id parity and line item position (§6)."""
    odd = return_id % 2 == 1
    as_str = {"id": odd, "return_id": not odd, "order_id": not odd, "order_number": not odd,
              "provider_order_id": odd, "provider_order_number": not odd, "provider_order_external_id": odd,
              "provider_line_item_id": True, "provider_refund_id": not odd}

    def typed(name: str, value: Any, index: int = 0) -> Any:
        if name == "line_item_id":
            return str(value) if (index + return_id) % 2 == 0 else int(value)
        return str(value) if as_str[name] else int(value)

    return typed


def _zip_for_webhook(zip_code: str, return_id: int) -> str | int:
    """Loop sends zip as str or int; an int would lose a leading zero, so only plain numbers become ints."""
    if return_id % 2 == 1 and zip_code.isdigit() and not zip_code.startswith("0"):
        return int(zip_code)
    return zip_code


def _totals(items: list[LineItem]) -> dict[str, str]:
    zero = Decimal("0.00")
    product = sum((li.price for li in items), zero)
    discount = sum((li.discount for li in items), zero)
    tax = sum((li.tax for li in items), zero)
    total = product - discount + tax
    nothing = fmt(zero)
    return {
        "total": fmt(total), "return_product_total": fmt(product), "return_discount_total": fmt(discount),
        "return_tax_total": fmt(tax), "return_credit_total": nothing, "return_total": fmt(total),
        "exchange_product_total": nothing, "exchange_discount_total": nothing, "exchange_tax_total": nothing,
        "exchange_total": nothing, "gift_card": nothing, "handling_fee": nothing,
        "refund": fmt(sum((li.refund for li in items), zero)), "upsell": nothing,
    }


def _line_view(li: LineItem, index: int, typed: Typed, detailed: bool) -> dict[str, Any]:
    view = {
        "line_item_id": typed("line_item_id", li.line_item_id, index),
        "provider_line_item_id": typed("provider_line_item_id", li.provider_line_item_id),
        "product_id": li.product_id, "variant_id": li.variant_id, "sku": li.sku, "barcode": li.barcode,
        "title": li.title, "price": fmt(li.price), "discount": fmt(li.discount), "tax": fmt(li.tax),
        "refund": fmt(li.refund), "returned_at": None, "exchange_variant": "",
        "return_reason": li.return_reason, "parent_return_reason": li.parent_return_reason,
        "return_comment": "", "outcome": li.outcome,
    }
    if detailed:  # list/details carry a few more fields than webhooks (§5.3)
        view.update({"refund_item": fmt(li.price - li.discount), "refund_tax": fmt(li.tax),
                     "provider_restock_location_id": None, "condition": None, "disposition": None})
    return view


def _view(r: ReturnRecord, typed: Typed, stamp: Callable[[dt.datetime], str], detailed: bool,
          zip_code: str | int) -> dict[str, Any]:
    odd_amount = r.id % 2 == 1
    return {
        "id": typed("id", r.id), "shop_id": r.shop_id, "state": r.state,
        "order_id": typed("order_id", r.order_id), "order_name": r.order_name,
        "order_number": typed("order_number", r.order_number),
        "provider_order_id": typed("provider_order_id", r.provider_order_id),
        "provider_order_number": typed("provider_order_number", r.order_number),
        "provider_order_external_id": typed("provider_order_external_id", r.provider_order_id),
        "created_at": stamp(r.created_at), "updated_at": stamp(r.updated_at),
        "edited_at": stamp(r.edited_at) if r.edited_at else None,
        "customer": r.customer["email"], "customer_detail": dict(r.customer),
        "address": {**r.address, "zip": zip_code}, "currency": r.currency, "is_gift_return": False,
        **_totals(r.line_items),
        "refunds": [{**refund,
                     "amount": refund["amount"] if detailed or odd_amount else float(refund["amount"]),
                     "provider_refund_id": typed("provider_refund_id", refund["provider_refund_id"])}
                    for refund in r.refunds],
        "exchanges": [], "labels": [], "carrier": "", "tracking_number": "N/A", "label_status": "pending",
        "label_updated_at": "", "status_page_url": r.status_page_url(),
        "line_items": [_line_view(li, i, typed, detailed) for i, li in enumerate(r.line_items)],
    }


def api_view(r: ReturnRecord) -> dict[str, Any]:
    """Details/list shape (§3.1): integer ids, naive timestamps."""
    return _view(r, _api_ids, naive, detailed=True, zip_code=r.address["zip"])


def webhook_payload(r: ReturnRecord, trigger: str) -> dict[str, Any]:
    """`return` topic payload (§5.3): mixed id types, ISO timestamps."""
    body = _view(r, _webhook_ids(r.id), iso, detailed=False, zip_code=_zip_for_webhook(r.address["zip"], r.id))
    return {"topic": "return", "trigger": trigger, **body}


def processing_failed_payload(r: ReturnRecord) -> dict[str, Any]:
    return {"topic": "return.processing", "trigger": "return.processing.failed",
            "return_id": _webhook_ids(r.id)("return_id", r.id), "return_state": r.state,
            "message": "Return failed to process", "source": "api"}


# --- refusals (§3.4) ------------------------------------------------------------------------------

def _state_refusal(state: str) -> dict[str, Any]:
    """The body Loop sends when the return's state forbids an action."""
    if state in ("cancelled", "review"):
        return {"message": f"Return is {state} and therefore cannot be processed."}
    return {"errors": {"message": f"Return is {state} and therefore cannot be processed.",
                       "code": "UNPROCESSABLE_RETURN"}}


def _cancel_refusal(state: str) -> dict[str, Any]:
    if state in ("review", "expired"):
        word = "flagged" if state == "review" else "expired"
        return {"content": f"Return is {word} and cannot be processed."}
    return _state_refusal(state)


# action -> (states it accepts, state it moves to); process is special: it only queues.
TRANSITIONS = {"flag": (("open",), "review"), "cancel": (("open",), "cancelled"),
               "close": (("open", "review"), "closed")}
ACTIONS = ("process", *TRANSITIONS)


# --- list query and cursor (§3.2) -----------------------------------------------------------------

@dataclass(frozen=True)
class ListQuery:
    start: dt.datetime
    end: dt.datetime
    filter_by: str
    states: tuple[str, ...]
    size: int
    paginate: bool
    after: tuple[int, int] | None = None  # (timestamp, id) of the last row of the previous page
    before: tuple[int, int] | None = None  # (timestamp, id) of the first row of the next page


def _normalise_state(value: str) -> str:
    return "review" if value == "needs review" else value  # older docs' spelling (§2)


def _window(args: Mapping[str, str], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    bounds = {}
    for name in ("from", "to"):
        if args.get(name):
            try:
                bounds[name] = parse_time(args[name])
            except ValueError:
                raise field_error(name, f"The {name} field must be a date like 2023-01-01 00:00:00 "
                                        "or 2023-01-01T00:00:00.000Z.") from None
    end = bounds.get("to", now)
    start = bounds.get("from", end - dt.timedelta(hours=24))
    if start > end:
        raise field_error("to", "The to field must be a date after or equal to from.")
    if end - start > MAX_LIST_SPAN:
        raise field_error("from", "The date range may not be greater than 120 days.")
    return start, end


def _page_size(raw: str | None) -> int:
    if raw is None:
        return 100
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:
        raise field_error("pageSize", "The page size must be an integer of at least 1.")
    if int(raw) > MAX_PAGE_SIZE:
        raise field_error("pageSize", "The page size may not be greater than 750.")
    return int(raw)


def parse_list_args(args: Mapping[str, str], now: dt.datetime) -> ListQuery:
    if args.get("cursor"):
        return decode_cursor(args["cursor"])
    start, end = _window(args, now)
    filter_field = args.get("filter", "created_at")
    if filter_field not in ("created_at", "updated_at"):
        raise field_error("filter", "The selected filter is invalid.")
    states = DEFAULT_LIST_STATES
    if args.get("state"):
        state = _normalise_state(args["state"])
        if state not in STATES:
            raise field_error("state", "The selected state is invalid.")
        states = (state,)
    paginate = args.get("paginate", "false").lower()
    if paginate not in ("true", "false", "1", "0"):
        raise field_error("paginate", "The paginate field must be true or false.")
    return ListQuery(start, end, filter_field, states, _page_size(args.get("pageSize")),
                     paginate in ("true", "1"))


def encode_cursor(q: ListQuery) -> str:
    data = {"f": int(q.start.timestamp()), "t": int(q.end.timestamp()), "by": q.filter_by, "s": list(q.states),
            "n": q.size, "a": q.after, "b": q.before}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListQuery:
    """The query a cursor we issued encodes; anything else (tampered, truncated, foreign) is a 422."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        query = ListQuery(
            start=_cursor_time(data["f"]), end=_cursor_time(data["t"]), filter_by=data["by"],
            states=tuple(data["s"]), size=data["n"], paginate=True,
            after=_cursor_position(data["a"]), before=_cursor_position(data["b"]))
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise field_error("cursor", "The cursor is invalid.") from None
    if (query.filter_by not in ("created_at", "updated_at") or not all(st in STATES for st in query.states)
            or not is_int(query.size) or not 1 <= query.size <= MAX_PAGE_SIZE):
        raise field_error("cursor", "The cursor is invalid.")
    return query


def _cursor_time(value: Any) -> dt.datetime:
    # From 0: a default window may start a day before EARLIEST.
    if not is_int(value) or not 0 <= value <= LATEST.timestamp():
        raise ValueError(value)
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _cursor_position(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or not all(is_int(v) for v in value):
        raise ValueError(value)
    return value[0], value[1]


# --- dispositioning (§3.5) ------------------------------------------------------------------------

GRADE_CATEGORIES = ("grade_a", "grade_b", "grade_c", "grade_d", "incorrect_item", "missing", "junk")
ASSESS_OUTCOMES = ("back_to_stock", "resale_hold", "recycle", "donate", "missing")
MAX_DISPOSITION_ITEMS = 30


def _disposition_item_errors(item: Any, kind: str) -> dict[str, str]:
    if not isinstance(item, dict):
        return {"": "Each item must be an object."}
    errors = {}
    if not is_int(item.get("line_item_id")):
        errors["line_item_id"] = "The line item id field is required and must be an integer."
    if kind == "grade":
        description = item.get("description")
        if not isinstance(description, str) or not description or len(description) > 255:
            errors["description"] = "The description field is required and may not exceed 255 characters."
        if "condition_category" in item and item["condition_category"] not in GRADE_CATEGORIES:
            errors["condition_category"] = "The selected condition category is invalid."
        if not isinstance(item.get("images", []), list) or len(item.get("images", [])) > 5:
            errors["images"] = "The images field may not have more than 5 items."
    elif item.get("disposition_outcome") not in ASSESS_OUTCOMES:
        errors["disposition_outcome"] = "The selected disposition outcome is invalid."
    if len(str(item.get("return_processor", ""))) > 100:
        errors["return_processor"] = "The return processor may not exceed 100 characters."
    if "inspected_at" in item:
        try:
            dt.datetime.strptime(str(item["inspected_at"]), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            errors["inspected_at"] = "The inspected at field must match the format Y-m-d H:i:s."
    return errors


def validate_disposition(items: Any, kind: str) -> list[dict[str, Any]]:
    """Check a grade/assess array (raises Invalid) and return it for echoing."""
    if not isinstance(items, list) or not items:
        raise Invalid("The request body must be a non-empty array of items.", {"items": ["required"]})
    if len(items) > MAX_DISPOSITION_ITEMS:
        raise Invalid("No more than 30 items may be sent at once.", {"items": ["too many"]})
    errors = {}
    for index, item in enumerate(items):
        for name, message in _disposition_item_errors(item, kind).items():
            errors[f"{index}.{name}".rstrip(".")] = [message]
    if errors:
        raise Invalid(next(iter(errors.values()))[0], errors)
    return items


# --- the store ------------------------------------------------------------------------------------

class Jobs:
    """Delayed background work (queued processing); cancelled on shutdown."""

    def __init__(self) -> None:
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        def run() -> None:
            with self._lock:
                self._timers.discard(timer)
            fn()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def cancel_all(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()


def _sequences() -> dict[str, itertools.count]:
    # Realistic-looking magnitudes, so clients meet large integers from the first return on.
    return {"return": itertools.count(52393555), "line_item": itertools.count(293482039),
            "order": itertools.count(2871), "provider_order": itertools.count(5444175757553),
            "provider_line": itertools.count(23984238720340), "product": itertools.count(7100000000001),
            "variant": itertools.count(41000000000001), "note": itertools.count(123),
            "refund": itertools.count(990000000001)}


class ReturnStore:
    """All returns and the state machine; one lock guards everything.

    `emit(trigger, payload)` is called (under the lock, so events keep their order) for every webhook-worthy
    change; webhooks.py decides who receives it.
    """

    def __init__(self, settings: Settings, clock: Clock, dice: Dice, emit: Callable[[str, dict[str, Any]], None]):
        self._settings = settings
        self._clock = clock
        self._dice = dice
        self._emit = emit
        self._lock = threading.RLock()
        self._jobs = Jobs()
        self._generation = 0  # bumped by reset so stale processing jobs do nothing
        self._clear()

    def _clear(self) -> None:
        self._returns: dict[int, ReturnRecord] = {}
        self._ids = _sequences()
        self._orders: dict[str, tuple[int, int]] = {}  # order_name -> (order_id, provider_order_id)
        self._provider_lines: dict[tuple[str, str], int] = {}  # (order_name, sku) -> provider line id
        self._products: dict[str, tuple[int, int]] = {}  # sku -> (product_id, variant_id)

    def reset(self) -> None:
        self._jobs.cancel_all()
        with self._lock:
            self._generation += 1
            self._clear()

    def shutdown(self) -> None:
        self._jobs.cancel_all()

    # creation (POST /_sim/returns) ------------------------------------------------------------

    def create(self, spec: Any) -> dict[str, Any]:
        order_name, items = _validate_create(spec)
        with self._lock:
            now = self._clock.now()
            order_id, provider_order_id = self._order_ids(order_name)
            record = ReturnRecord(
                id=next(self._ids["return"]), shop_id=spec.get("shop_id", self._settings["shop_id"]),
                order_id=order_id, order_name=order_name,
                order_number=int(re.sub(r"\D", "", order_name) or order_id), provider_order_id=provider_order_id,
                customer=_customer(spec.get("customer")), address={}, currency=spec.get("currency", "USD"),
                line_items=[self._line_item(order_name, item) for item in items], created_at=now, updated_at=now)
            record.address = _address(spec.get("address"), record.customer)
            record.history.append({"at": iso(now), "from": None, "to": "open", "cause": "created"})
            self._returns[record.id] = record
            self._emit("return.created", webhook_payload(record, "return.created"))
            return api_view(record)

    def _order_ids(self, order_name: str) -> tuple[int, int]:
        if order_name not in self._orders:
            self._orders[order_name] = (next(self._ids["order"]), next(self._ids["provider_order"]))
        return self._orders[order_name]

    def _line_item(self, order_name: str, item: dict[str, Any]) -> LineItem:
        sku = item["sku"]
        # Units of one Shopify line share its id (§5.3); here the same SKU on one order is one line.
        provider_line = self._provider_lines.setdefault((order_name, sku), next(self._ids["provider_line"]))
        product_id, variant_id = self._products.setdefault(
            sku, (next(self._ids["product"]), next(self._ids["variant"])))
        return LineItem(
            line_item_id=next(self._ids["line_item"]), provider_line_item_id=provider_line,
            product_id=product_id, variant_id=variant_id, sku=sku, barcode=item.get("barcode", ""),
            title=item.get("title", sku), price=money(item["price"]), discount=money(item.get("discount", 0)),
            tax=money(item.get("tax", 0)), return_reason=item.get("return_reason", "Other"),
            parent_return_reason=item.get("parent_return_reason"), outcome=item.get("outcome", "default"))

    # reads --------------------------------------------------------------------------------------

    def details(self, args: Mapping[str, str]) -> dict[str, Any] | None:
        if args.get("currency_type", "shop") not in ("shop", "presentment"):
            raise field_error("currency_type", "The selected currency type is invalid.")
        name = next((n for n in ("return_id", "order_id", "order_name") if args.get(n)), None)
        if name is None:
            raise field_error("return_id", "One of return_id, order_id or order_name is required.")
        value = args[name]
        if name != "order_name":
            if not _is_id_text(value):
                raise field_error(name, f"The {name.replace('_', ' ')} must be an integer.")
            value = int(value)
        attribute = "id" if name == "return_id" else name
        with self._lock:
            matches = [r for r in self._returns.values() if getattr(r, attribute) == value]
            return api_view(matches[-1]) if matches else None  # several returns per order: the newest

    def list_page(self, q: ListQuery) -> tuple[list[dict[str, Any]], ListQuery | None, ListQuery | None]:
        """Rows of one page plus the queries for the next and previous pages (None at either end)."""
        with self._lock:
            rows = sorted(((int(getattr(r, q.filter_by).timestamp()), r.id), r) for r in self._returns.values()
                          if r.state in q.states and q.start <= getattr(r, q.filter_by) <= q.end)
            if not q.paginate:
                return [api_view(r) for _, r in rows], None, None
            if q.before:
                earlier = [row for row in rows if row[0] < q.before]
                page, has_prev, has_next = earlier[-q.size:], len(earlier) > q.size, len(earlier) < len(rows)
            else:
                later = [row for row in rows if q.after is None or row[0] > q.after]
                page, has_prev, has_next = later[:q.size], len(later) < len(rows), len(later) > q.size
            next_q = replace(q, after=page[-1][0], before=None) if page and has_next else None
            prev_q = replace(q, before=page[0][0], after=None) if page and has_prev else None
            return [api_view(r) for _, r in page], next_q, prev_q

    def knows_line_item(self, line_item_id: int) -> bool:
        with self._lock:
            return any(li.line_item_id == line_item_id
                       for r in self._returns.values() for li in r.line_items + r.removed_line_items)

    def internal(self, return_id: int) -> dict[str, Any] | None:
        """GET /_sim/returns/<id>: the API view plus what only the sandbox knows."""
        with self._lock:
            r = self._returns.get(return_id)
            if r is None:
                return None
            return json.loads(json.dumps({
                **api_view(r), "actions": r.actions, "history": r.history, "notes": r.notes,
                "process_data": r.process_data, "processing_jobs": r.processing_jobs,
                "processing_pending": r.processing_pending, "processing_failed": r.processing_failed,
                "removed_line_items": [_line_view(li, i, _api_ids, True)
                                       for i, li in enumerate(r.removed_line_items)]}))

    def stats(self) -> dict[str, Any]:
        kinds = (*ACTIONS, "remove", "note")
        with self._lock:
            per_return = {}
            for r in self._returns.values():
                counts = dict.fromkeys(kinds, 0)
                counts["refused"] = 0
                for action in r.actions:
                    counts[action["action"] if action["ok"] else "refused"] += 1
                counts["processing_failed"], counts["refunds"] = r.processing_failed, len(r.refunds)
                per_return[str(r.id)] = counts
        totals = {k: sum(c[k] for c in per_return.values())
                  for k in (*kinds, "refused", "processing_failed", "refunds")}
        totals["returns"] = len(per_return)
        return {"returns": per_return, "totals": totals}

    # actions (§3.3, §3.4) -------------------------------------------------------------------------

    def act(self, return_id: int, action: str, data: dict[str, Any] | None = None) -> Outcome | None:
        """process / flag / cancel / close. None when the return does not exist."""
        with self._lock:
            r = self._returns.get(return_id)
            if r is None:
                return None
            refusal = self._refusal(r, action)
            if refusal is not None:
                outcome = Outcome(False, refusal, self._settings["refusal_status"])
            else:
                outcome = Outcome(True, TRUE)
                if action == "process":
                    r.process_data.update(data or {})
                    self._queue_processing(r)
                else:
                    self._set_state(r, TRANSITIONS[action][1], cause=f"api {action}")
            self._record(r, action, outcome, data)
            return outcome

    def _refusal(self, r: ReturnRecord, action: str) -> dict[str, Any] | None:
        if action == "process":
            if self._processable(r):
                return None
            return FLAGGED_REFUSAL if r.state == "review" else _state_refusal(r.state)
        if r.state in TRANSITIONS[action][0]:
            return None
        return _cancel_refusal(r.state) if action == "cancel" else _state_refusal(r.state)

    def remove(self, return_id: int, raw_ids: str | None) -> Outcome | None:
        """Remove units and process the rest (§3.3); refusals are real 422s here."""
        with self._lock:
            r = self._returns.get(return_id)
            if r is None:
                return None
            outcome = self._removal_refusal(r, raw_ids) or self._apply_removal(r, raw_ids)
            self._record(r, "remove", outcome, {"line_item_id": raw_ids})
            return outcome

    @staticmethod
    def _removal_refusal(r: ReturnRecord, raw_ids: str | None) -> Outcome | None:
        if not raw_ids or not raw_ids.strip(","):
            return Outcome(False, {"error": {"message": "The line item id field is required."}}, 422)
        if r.state != "open":
            return Outcome(False, {"message": "Return cannot be modified."}, 422)
        wanted = _id_list(raw_ids)
        removable = {li.line_item_id for li in r.line_items if li.outcome != "exchange"}  # refund/credit only
        qualifying = [i for i in wanted if i in removable]
        if not qualifying:
            return Outcome(False, {"message": "There are no line items that qualify for removal"}, 422)
        if len(qualifying) < len(wanted):
            return Outcome(False, {"message": "Not all line items qualify for removal"}, 422)
        return None

    def _apply_removal(self, r: ReturnRecord, raw_ids: str) -> Outcome:
        wanted = set(_id_list(raw_ids))
        r.removed_line_items += [li for li in r.line_items if li.line_item_id in wanted]
        r.line_items = [li for li in r.line_items if li.line_item_id not in wanted]
        r.edited_at = r.updated_at = self._clock.now()
        self._emit("return.updated", webhook_payload(r, "return.updated"))
        self._queue_processing(r)
        return Outcome(True, TRUE)

    def notes(self, return_id: int) -> list[dict[str, Any]] | None:
        with self._lock:
            r = self._returns.get(return_id)
            return None if r is None else [dict(n) for n in r.notes]

    def add_note(self, return_id: int, content: Any) -> Outcome | None:
        with self._lock:
            r = self._returns.get(return_id)
            if r is None:
                return None
            if not isinstance(content, str) or not content.strip() or len(content) >= NOTE_LIMIT:
                outcome = Outcome(False, NOTE_REFUSAL, 422)
            else:
                r.notes.append({"id": next(self._ids["note"]), "content": content,
                                "created_at": iso(self._clock.now())})
                outcome = Outcome(True, TRUE)
            self._record(r, "note", outcome, {"content": content})
            return outcome

    def admin_set_state(self, return_id: int, state: Any) -> dict[str, Any] | None:
        """POST /_sim/returns/<id>/state: a change made by hand in Loop's admin."""
        state = _normalise_state(state) if isinstance(state, str) else state
        if state not in ADMIN_STATES:
            raise field_error("state", "The state must be one of: " + ", ".join(ADMIN_STATES) + ".")
        with self._lock:
            r = self._returns.get(return_id)
            if r is None:
                return None
            if r.state != state:
                self._set_state(r, state, cause="admin")
            return api_view(r)

    # internals ----------------------------------------------------------------------------------

    def _record(self, r: ReturnRecord, action: str, outcome: Outcome, data: Any) -> None:
        r.actions.append({"action": action, "at": iso(self._clock.now()), "at_s": self._clock.precise(), "ok": outcome.ok,
                          "status": outcome.status, "result": outcome.body, "data": data})

    def _set_state(self, r: ReturnRecord, state: str, cause: str) -> None:
        now = self._clock.now()
        r.history.append({"at": iso(now), "from": r.state, "to": state, "cause": cause})
        r.state, r.updated_at = state, now
        self._emit("return.updated", webhook_payload(r, "return.updated"))
        if state == "closed":
            self._emit("return.closed", webhook_payload(r, "return.closed"))

    def _processable(self, r: ReturnRecord) -> bool:
        return r.state == "open" or (r.state == "review" and self._settings["allow_flagged_process"])

    def _queue_processing(self, r: ReturnRecord) -> None:
        """Loop only queues processing; outcomes run later (§3.3), after a delay that may be drawn."""
        index = len(r.processing_jobs)
        delay = draw_seconds(self._settings["process_delay_s"], self._dice.rng("process_delay", r.id, index))
        r.processing_jobs.append({"queued_at": iso(self._clock.now()), "delay_s": round(delay, 3),
                                  "outcome": "pending"})
        generation, return_id = self._generation, r.id
        self._jobs.later(delay, lambda: self._finish_processing(return_id, index, generation))

    def _finish_processing(self, return_id: int, index: int, generation: int) -> None:
        with self._lock:
            r = self._returns.get(return_id)
            if r is None or generation != self._generation:
                return
            job = r.processing_jobs[index]
            if not self._processable(r):  # closed, cancelled or flagged meanwhile: nothing to do
                job["outcome"] = "nothing to do"
            elif self._processing_fails(r):
                job["outcome"] = "failed"
                r.history.append({"at": iso(self._clock.now()), "from": r.state, "to": r.state,
                                  "cause": "processing failed"})
                # No timestamp in the payload: a repeat failure in the same state sends the same bytes.
                self._emit("return.processing.failed", processing_failed_payload(r))
            else:
                job["outcome"] = "processed"
                self._refund(r)
                self._set_state(r, "closed", cause="processed")

    def _processing_fails(self, r: ReturnRecord) -> bool:
        planned = self._failures_planned(r)
        return planned is None or r.processing_failed < planned

    def _failures_planned(self, r: ReturnRecord) -> int | None:
        """How many processing attempts of this return fail before one succeeds; None: all of them."""
        mode = self._settings["processing_fails"]
        if isinstance(mode, dict) and str(r.id) in mode:
            return mode[str(r.id)]
        if mode is True or (isinstance(mode, list) and r.id in mode):
            return None
        if self._dice.chance("processing_fails", r.id) < self._settings["processing_failure_rate"]:
            return self._settings["processing_failure_repeat"]
        return 0

    def _refund(self, r: ReturnRecord) -> None:
        amount = sum((li.refund for li in r.line_items), Decimal("0.00"))
        if amount:
            r.refunds.append({"gateway": "shopify_payments", "amount": fmt(amount), "currency": r.currency,
                              "provider_refund_id": next(self._ids["refund"])})


def _id_list(raw_ids: str) -> list[int | str]:
    """`1,2,x` -> [1, 2, "x"]; non-numeric tokens stay (they never qualify), duplicates go."""
    tokens = [t.strip() for t in raw_ids.split(",") if t.strip()]
    return list(dict.fromkeys(int(t) if _is_id_text(t) else t for t in tokens))


def _customer(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {**DEFAULT_CUSTOMER, "email": value}
    return {**DEFAULT_CUSTOMER, **(value or {})}


def _address(value: Any, customer: dict[str, str]) -> dict[str, str]:
    name = " ".join(p for p in (customer["first_name"], customer["last_name"]) if p)
    address = {"name": name, **DEFAULT_ADDRESS, **(value or {})}
    address["state"] = US_STATES.get(address["state"], address["state"])  # Loop sends the full name
    address["zip"] = str(address["zip"])
    return address


def _is_text_object(value: Any, numbers: tuple[str, ...] = ()) -> bool:
    """An object of strings (the `numbers` keys may also hold an integer, like a zip)."""
    return isinstance(value, dict) and all(
        isinstance(v, str) or (k in numbers and is_int(v)) for k, v in value.items())


CREATE_FIELDS: dict[str, Callable[[Any], bool]] = {
    "customer": lambda v: isinstance(v, str) or _is_text_object(v),
    "address": lambda v: _is_text_object(v, numbers=("zip",)),
    "currency": lambda v: isinstance(v, str),
    "shop_id": lambda v: is_int(v) and 1 <= v < 2**63,
}
LINE_TEXT_FIELDS = ("barcode", "title", "return_reason", "outcome")


def _validate_create(spec: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(spec, dict):
        raise Invalid("The request body must be a JSON object.")
    errors = {}
    order_name = spec.get("order_name")
    if not isinstance(order_name, str) or not order_name or len(order_name) > 255:
        errors["order_name"] = ["The order name field is required and may not exceed 255 characters."]
    for name, fits in CREATE_FIELDS.items():
        if name in spec and not fits(spec[name]):
            errors[name] = [f"The {name} field has the wrong type."]
    items = spec.get("line_items")
    if not isinstance(items, list) or not items:
        errors["line_items"] = ["At least one line item (one per unit) is required."]
    else:
        for index, item in enumerate(items):
            for name, message in _line_errors(item).items():
                errors[f"line_items.{index}.{name}"] = [message]
    if errors:
        raise Invalid(next(iter(errors.values()))[0], errors)
    return order_name, items


def _line_errors(item: Any) -> dict[str, str]:
    if not isinstance(item, dict):
        return {"item": "Each line item must be an object."}
    errors = {}
    if not isinstance(item.get("sku"), str) or not item["sku"]:
        errors["sku"] = "The sku field is required."
    for name in LINE_TEXT_FIELDS:
        if name in item and not isinstance(item[name], str):
            errors[name] = f"The {name} field must be a string."
    if item.get("parent_return_reason") is not None and not isinstance(item["parent_return_reason"], str):
        errors["parent_return_reason"] = "The parent return reason field must be a string or null."
    for name in ("price", "discount", "tax"):
        if name == "price" or name in item:
            try:
                money(item.get(name))
            except (InvalidOperation, ValueError, TypeError):
                errors[name] = f"The {name} field must be an amount."
    return errors
