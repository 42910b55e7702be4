"""In-memory model of RLM's return-authorization API (docs/rlm-api.md Part B): data, rules, feeds.

No Flask here: `app.py` turns HTTP into calls on `RlmState` and `SimError` into error bodies.
One re-entrant lock guards everything, because the sandbox server is threaded.
"""
from __future__ import annotations

import base64
import copy
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.common import is_int, is_number
from sandbox.rlm.catalog import DIVISIONS, ITEMS, REASON_CODES, WAREHOUSES, Catalog, Sku

OPEN, TRANSMITTED, PARTIALLY_RECEIVED = "OPEN", "TRANSMITTED", "PARTIALLY_RECEIVED"
RECEIVED, CLOSED, CANCELLED = "RECEIVED", "CLOSED", "CANCELLED"
STATUSES = (OPEN, TRANSMITTED, PARTIALLY_RECEIVED, RECEIVED, CLOSED, CANCELLED)
TERMINAL = (CLOSED, CANCELLED)
AWAITING_RECEIPTS = (TRANSMITTED, PARTIALLY_RECEIVED)
CANCELLABLE = (OPEN, TRANSMITTED)  # a receipt always moves an RA past TRANSMITTED, so "no receipts" holds
CLOSABLE = (TRANSMITTED, PARTIALLY_RECEIVED, RECEIVED)

CONDITIONS = ("GOOD", "DAMAGED", "DEFECTIVE", "WRONG_ITEM", "MISSING_TAGS")
DISPOSITIONS = ("RESTOCK", "SECONDS", "DESTROY", "RTV")
SOURCES = ("3PL", "MANUAL", "SANDBOX")
CLOSE_REASONS = ("LOOP_PROCESSED", "LOOP_FLAG_RESOLVED", "EXPIRED", "CUSTOMER_KEPT", "MANUAL")
SCENARIOS = ("exact", "partial", "damaged", "wrong_item", "over", "none", "remainder")
PATCHABLE_UNTIL_TERMINAL = ("carrier", "tracking_number", "notes", "special01", "special02", "special03",
                            "special04")
TEXT_FIELDS = ("external_source", "customer_number", "customer_po", *PATCHABLE_UNTIL_TERMINAL)
EXPIRY_DAYS = 30
MAX_AUTO_RECEIVE_S = 10 * 365 * 86400


class SimError(Exception):
    """An RLM error answer: HTTP status, `description`, and extra body fields (line_number, field…)."""

    def __init__(self, http_status: int, description: str, /, **extra: Any):
        super().__init__(description)
        self.http_status = http_status
        self.description = description
        self.extra = extra


def bad_parameter(name: str) -> SimError:
    return SimError(400, f"Invalid Parameter {name}")


def line_error(line_number: Any, field_name: str, message: str) -> SimError:
    return SimError(422, f"{message} on Line {line_number}", line_number=line_number, field=field_name)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Sandbox time stays between these, so date arithmetic (expiry, feeds, auto-receive) never overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_SHIFT_S = 3e11  # about 9500 years: any longer move leaves the range anyway


def parse_iso(text: str) -> datetime | None:
    """ISO-8601 → aware UTC datetime; naive values are taken as UTC. None if unparseable or out of range."""
    try:
        moment = datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a zone offset past year 1 or 9999
        return None
    return moment if EARLIEST <= moment <= LATEST else None


def shifted(moment: datetime, seconds: Any) -> datetime | None:
    """`moment` moved by `seconds`, or None if that is not a number or leaves the sandbox's years."""
    if not is_number(seconds) or abs(seconds) >= MAX_SHIFT_S:
        return None
    moved = moment + timedelta(seconds=seconds)
    return moved if EARLIEST <= moved <= LATEST else None


def yyyymmdd(moment: datetime) -> int:
    return int(moment.strftime("%Y%m%d"))


class Clock:
    """Sandbox time: real UTC plus an offset, or frozen. Whole seconds, like RLM's own timestamps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def now(self) -> datetime:
        with self._lock:
            moment = self._frozen_at or datetime.now(UTC) + self._offset
        return moment.replace(microsecond=0)

    def precise(self) -> float:
        """The same time as `now`, unrounded, in seconds since the epoch (`/_sim` answers only)."""
        with self._lock:
            moment = self._frozen_at or datetime.now(UTC) + self._offset
        return moment.timestamp()

    def set(self, moment: datetime) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = moment
            self._offset = moment - datetime.now(UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)
            if self._frozen_at is not None:
                self._frozen_at += timedelta(seconds=seconds)

    def freeze(self, frozen: bool) -> None:
        with self._lock:
            now = datetime.now(UTC)
            if frozen and self._frozen_at is None:
                self._frozen_at = now + self._offset
            elif not frozen and self._frozen_at is not None:
                self._offset = self._frozen_at - now
                self._frozen_at = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None


@dataclass
class Company:
    """One tenant: its settings, RAs, append-only receipts and events."""

    number: int
    auto_transmit_on_create: bool = False
    preferred_warehouse: int | None = None
    next_ra_number: int = 3100
    ras: dict[int, dict] = field(default_factory=dict)
    ra_by_ref: dict[str, int] = field(default_factory=dict)
    receipts: list[dict] = field(default_factory=list)
    receipt_by_key: dict[tuple[int, str], int] = field(default_factory=dict)  # (ra, Idempotency-Key)
    events: list[dict] = field(default_factory=list)
    next_asn_number: int = 500001
    next_receipt_number: int = 8001
    auto_received: set[int] = field(default_factory=set)


def _positive_int(value: Any) -> int | None:
    """A number RLM can store (1 to 2**63 - 1), also given as ASCII digits; else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    return value if is_int(value) and 0 < value < 2**63 else None


def _optional_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    number = _positive_int(value)
    if number is None:
        raise bad_parameter(name)
    return number


def _text(body: dict, name: str) -> str | None:
    """An optional text field: a string or null, nothing else."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_parameter(name)
    return value


def _date_field(body: dict, name: str, default: int) -> int:
    """A YYYYMMDD date, as a number or as 8 digits, within the sandbox's years."""
    value = body.get(name)
    if value is None:
        return default
    text = str(value) if is_int(value) or isinstance(value, str) else ""
    try:
        day = datetime.strptime(text, "%Y%m%d") if len(text) == 8 and text.isascii() and text.isdigit() else None
    except ValueError:
        day = None
    if day is None or not EARLIEST.year <= day.year < LATEST.year:
        raise bad_parameter(name)
    return int(text)


MAX_PRICE = Decimal("1e12")


def _price(value: Any, line_number: Any) -> str:
    try:
        price = Decimal(str(value))  # str(True) is no number either
    except InvalidOperation:
        raise line_error(line_number, "unit_price", "Invalid Unit Price") from None
    if not price.is_finite() or not 0 <= price < MAX_PRICE:
        raise line_error(line_number, "unit_price", "Invalid Unit Price")
    return str(price.quantize(Decimal("0.01")))


def resolve_item(catalog: Catalog, raw: dict, n: Any) -> Sku:
    """Find the SKU a line names, by `upc` and/or style+colour+size (+ `sku_number`), A.4 wording on error.

    `sku_number` identifies the style; when a UPC is given it is the authority and every other given
    field must agree with it.
    """
    upc, style, color, size = raw.get("upc"), raw.get("style_number"), raw.get("color"), raw.get("size")
    sku_number, sku_style = None, None
    if raw.get("sku_number") is not None:
        sku_number = _positive_int(raw["sku_number"])
        sku_style = catalog.style_of_sku_number(sku_number) if sku_number else None
        if sku_style is None:
            raise line_error(n, "sku_number", "Invalid SKU Number")
        if style is not None and style != sku_style:
            raise line_error(n, "sku_number", "SKU Number Does Not Match With Style Passed")
    if upc is not None:
        sku = catalog.by_upc(str(upc))
        if sku is None:
            raise line_error(n, "upc", "Invalid UPC")
        for name, given, actual, label in (("sku_number", sku_number, sku.sku_number, "SKU Number"),
                                           ("style_number", style, sku.style_number, "Style"),
                                           ("color", color, sku.color, "Color"),
                                           ("size", size, sku.size, "Size")):
            if given is not None and str(given) != str(actual):
                raise line_error(n, name, f"Invalid {label}")
        return sku
    style = style or sku_style
    if style is None or not catalog.has_style(str(style)):
        raise line_error(n, "style_number", "Invalid Style")
    if color is None or not catalog.has_colour(str(style), str(color)):
        raise line_error(n, "color", "Invalid Color")
    sku = catalog.find(str(style), str(color), str(size)) if size is not None else None
    if sku is None:
        raise line_error(n, "size", "Invalid Size")
    return sku


def _receipt_unit(ra_line: dict, qty: int, condition: str = "GOOD", disposition: str = "RESTOCK") -> dict:
    return {"ra_line_number": ra_line["line_number"], "qty_received": qty, "condition": condition,
            "disposition": disposition}


class RlmState:
    """All sandbox data and the B.4 lifecycle rules. Every public method is atomic under `lock`."""

    def __init__(self, companies: dict[int, dict] | None = None, ra_number_start: int = 3100):
        self.lock = threading.RLock()
        self._company_settings = companies or {90: {}}
        self._ra_number_start = ra_number_start
        self.catalog = Catalog(ITEMS)
        self.reset()

    # ----- sandbox housekeeping -------------------------------------------------------------------

    def reset(self) -> None:
        """Wipe every RA, receipt, event, counter, runtime config and the clock; reseed from settings."""
        with self.lock:
            self.clock = Clock()
            self.companies = {
                number: Company(number=number, next_ra_number=self._ra_number_start,
                                auto_transmit_on_create=bool(conf.get("auto_transmit_on_create", False)),
                                preferred_warehouse=conf.get("preferred_warehouse"))
                for number, conf in self._company_settings.items()
            }
            self.auto_receive: dict | None = None
            self.request_counts: Counter[str] = Counter()
            self.create_calls: Counter[tuple[int, str]] = Counter()

    def configure(self, body: dict) -> dict:
        """`/_sim/config`: auto-transmit per company (all, or `company_number`) and auto-receive."""
        with self.lock:
            targets = list(self.companies.values())
            if body.get("company_number") is not None:
                targets = [self.company(_optional_int(body, "company_number"))]
            if not isinstance(body.get("auto_transmit_on_create", False), bool):
                raise bad_parameter("auto_transmit_on_create")
            auto_receive = self._auto_receive_config(body.get("auto_receive", self.auto_receive))
            if "auto_transmit_on_create" in body:
                for company in targets:
                    company.auto_transmit_on_create = body["auto_transmit_on_create"]
            self.auto_receive = auto_receive
            return self.config()

    @staticmethod
    def _auto_receive_config(value: Any) -> dict | None:
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("scenario") not in SCENARIOS:
            raise bad_parameter("auto_receive")
        after_s = value.get("after_s", 0)
        if not is_number(after_s) or not 0 <= after_s <= MAX_AUTO_RECEIVE_S:
            raise bad_parameter("auto_receive")
        return {"scenario": value["scenario"], "after_s": after_s}

    def config(self) -> dict:
        with self.lock:
            return {
                "auto_receive": self.auto_receive,
                "companies": {str(c.number): {"auto_transmit_on_create": c.auto_transmit_on_create,
                                              "preferred_warehouse": c.preferred_warehouse}
                              for c in self.companies.values()},
            }

    def tick(self) -> None:
        """Apply auto-receive to transmitted RAs whose delay has passed (lazily, on each request)."""
        with self.lock:
            if not self.auto_receive:
                return
            due = iso(self.clock.now() - timedelta(seconds=self.auto_receive["after_s"]))
            for company in self.companies.values():
                for ra in list(company.ras.values()):
                    if (ra["status"] == TRANSMITTED and ra["ra_number"] not in company.auto_received
                            and ra["asn"]["transmitted_at"] <= due):
                        company.auto_received.add(ra["ra_number"])
                        self._receive_scenario_quietly(company, ra, self.auto_receive["scenario"])

    def _receive_scenario_quietly(self, company: Company, ra: dict, scenario: str) -> None:
        try:
            self._receive_scenario(company, ra, scenario)
        except SimError:
            pass  # e.g. "partial" on a one-unit RA: nothing sensible to post, leave it transmitted

    def record_request(self, key: str) -> None:
        with self.lock:
            self.request_counts[key] += 1

    def stats(self) -> dict:
        with self.lock:
            ras_per_ref: dict[str, dict[str, int]] = {}
            for company in self.companies.values():
                refs = Counter(ra["external_ref"] for ra in company.ras.values())
                ras_per_ref[str(company.number)] = dict(refs)
            create_calls: dict[str, dict[str, int]] = {}
            for (number, ref), count in self.create_calls.items():
                create_calls.setdefault(str(number), {})[ref] = count
            return {
                "requests": dict(self.request_counts),
                "ras_per_external_ref": ras_per_ref,
                "create_calls_per_external_ref": create_calls,
                "ras": sum(len(c.ras) for c in self.companies.values()),
                "receipts": sum(len(c.receipts) for c in self.companies.values()),
                "events": sum(len(c.events) for c in self.companies.values()),
            }

    # ----- reference data ---------------------------------------------------------------------------

    def company(self, number: int) -> Company:
        company = self.companies.get(number)
        if company is None:
            raise SimError(404, "Invalid Company")
        return company

    @staticmethod
    def warehouses() -> list[dict]:
        return copy.deepcopy(WAREHOUSES)

    @staticmethod
    def reason_codes() -> list[dict]:
        return copy.deepcopy(REASON_CODES)

    @staticmethod
    def divisions() -> list[dict]:
        return copy.deepcopy(DIVISIONS)

    def items(self, **filters: str | None) -> list[dict]:
        return self.catalog.search(**filters)

    # ----- return authorizations -----------------------------------------------------------------

    def create_ra(self, number: int, body: dict) -> tuple[dict, bool]:
        """B.6: idempotent on (company, external_ref). Returns (RA view, created?)."""
        with self.lock:
            company = self.company(number)
            if body.get("external_ref") in (None, ""):
                raise SimError(422, "No External Reference Was Received", field="external_ref")
            ref = _text(body, "external_ref")
            self.create_calls[(number, ref)] += 1
            if ref in company.ra_by_ref:
                return self._view(company, company.ras[company.ra_by_ref[ref]]), False
            ra = self._build_ra(company, body, ref)
            company.next_ra_number += 1
            company.ras[ra["ra_number"]] = ra
            company.ra_by_ref[ref] = ra["ra_number"]
            self._emit(company, "RA_CREATED", ra)
            if company.auto_transmit_on_create:
                self._transmit(company, ra)
            return self._view(company, ra), True

    def _build_ra(self, company: Company, body: dict, ref: str) -> dict:
        now = self.clock.now()
        division = _optional_int(body, "division_number")
        if division not in {d["division_number"] for d in DIVISIONS}:
            raise SimError(422, "Invalid Division", field="division_number")
        warehouse = self._warehouse(company, _optional_int(body, "warehouse_number"))
        ship_from = self._ship_from(body.get("ship_from"))
        text = {name: _text(body, name) for name in TEXT_FIELDS}
        lines = self._lines(body.get("lines"), division)
        ra_date = _date_field(body, "ra_date", yyyymmdd(now))
        default_expiry = datetime.strptime(str(ra_date), "%Y%m%d") + timedelta(days=EXPIRY_DAYS)
        return {
            "ra_number": company.next_ra_number,
            "external_ref": ref,
            "external_source": text["external_source"] or "LOOP",
            "division_number": division,
            "warehouse_number": warehouse,
            "customer_number": text["customer_number"],
            "store_number": _optional_int(body, "store_number"),
            "customer_po": text["customer_po"],
            "original_order_number": _optional_int(body, "original_order_number"),
            "original_invoice_number": _optional_int(body, "original_invoice_number"),
            "ra_date": ra_date,
            "expiration_date": _date_field(body, "expiration_date", yyyymmdd(default_expiry)),
            "status": OPEN,
            "close_reason": None,
            "close_note": None,
            "carrier": text["carrier"],
            "tracking_number": text["tracking_number"],
            "ship_from": ship_from,
            "asn": None,
            "notes": text["notes"],
            **{f"special0{i}": text[f"special0{i}"] for i in range(1, 5)},
            "created_at": iso(now),
            "updated_at": iso(now),
            "lines": lines,
        }

    @staticmethod
    def _warehouse(company: Company, number: int | None) -> int:
        if number is None:
            number = company.preferred_warehouse
        if number is None:
            raise SimError(422, "No Warehouse Was Received And There Is No Setup For A Preferred One",
                           field="warehouse_number")
        warehouse = next((w for w in WAREHOUSES if w["warehouse_number"] == number), None)
        if warehouse is None:
            raise SimError(422, "Invalid Warehouse", field="warehouse_number")
        if not warehouse["accepts_returns"]:
            raise SimError(422, "Warehouse Does Not Accept Returns", field="warehouse_number")
        return number

    @staticmethod
    def _ship_from(value: Any) -> dict | None:
        if value is None:
            return None
        if not isinstance(value, dict) or not all(v is None or isinstance(v, str) for v in value.values()):
            raise bad_parameter("ship_from")
        if len(str(value.get("state") or "")) > 2:
            raise SimError(422, "Shipping State Too Long. Max 2 Characters", field="ship_from.state")
        return {**value, "country_code": value.get("country_code") or "USA"}

    def _lines(self, raw_lines: Any, division: int) -> list[dict]:
        if not isinstance(raw_lines, list) or not raw_lines:
            raise SimError(422, "No Lines Were Received", field="lines")
        lines, divisions = [], {division}
        for position, raw in enumerate(raw_lines, start=1):
            line, sku = self._line(raw, position)
            if any(existing["line_number"] == line["line_number"] for existing in lines):
                raise line_error(line["line_number"], "line_number", "Duplicate Line Number")
            lines.append(line)
            divisions.add(sku.division_number)
        if len(divisions) > 1:  # RLM splits by division; one RA stays in one division
            raise SimError(422, "Lines Span Multiple Divisions", field="lines")
        return lines

    def _line(self, raw: Any, position: int) -> tuple[dict, Sku]:
        if not isinstance(raw, dict):
            raise bad_parameter("lines")
        n = raw.get("line_number", position)
        if _positive_int(n) is None:
            raise bad_parameter("line_number")
        n = int(n)
        sku = resolve_item(self.catalog, raw, n)
        qty = _positive_int(raw.get("qty_authorized"))
        if qty is None:
            raise line_error(n, "qty_authorized", "Invalid Quantity")
        active = {r["code"] for r in REASON_CODES if r["active"]}
        if not isinstance(raw.get("reason_code"), str) or raw["reason_code"] not in active:
            raise line_error(n, "reason_code", "Invalid Reason Code")
        refs = raw.get("external_line_refs") or []
        if not isinstance(refs, list) or not all(isinstance(r, str) or is_int(r) for r in refs):
            raise line_error(n, "external_line_refs", "Invalid External Line Refs")
        line = {
            "line_number": n, "sku_number": sku.sku_number, "style_number": sku.style_number,
            "season_year": sku.season_year, "color": sku.color, "size": sku.size, "upc": sku.upc,
            "description": _text(raw, "description") or sku.description, "qty_authorized": qty,
            "unit_price": _price(raw.get("unit_price", "0"), n), "reason_code": raw["reason_code"],
            "reason_note": _text(raw, "reason_note"), "external_line_refs": [str(r) for r in refs],
        }
        return line, sku

    def get_ra(self, number: int, ra_number: int) -> dict:
        with self.lock:
            company = self.company(number)
            return self._view(company, self._ra(company, ra_number))

    def search_ras(self, number: int, external_ref: str | None = None, status: str | None = None,
                   customer_po: str | None = None, updated_since: datetime | None = None) -> list[dict]:
        with self.lock:
            company = self.company(number)
            since = iso(updated_since) if updated_since else None
            found = [
                ra for ra in company.ras.values()
                if (external_ref is None or ra["external_ref"] == external_ref)
                and (status is None or ra["status"] == status)
                and (customer_po is None or ra["customer_po"] == customer_po)
                and (since is None or ra["updated_at"] >= since)
            ]
            return [self._view(company, ra) for ra in sorted(found, key=lambda r: r["ra_number"])]

    def patch_ra(self, number: int, ra_number: int, body: dict) -> dict:
        """Lines only while OPEN (replaced wholesale); carrier/tracking/notes until terminal."""
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            unknown = sorted(set(body) - set(PATCHABLE_UNTIL_TERMINAL) - {"lines"})
            if unknown:
                raise bad_parameter(unknown[0])
            if ra["status"] in TERMINAL:
                raise self._conflict(ra, f"Return Authorization Is {ra['status'].title()}")
            text = {name: _text(body, name) for name in PATCHABLE_UNTIL_TERMINAL if name in body}
            if "lines" in body:
                if ra["status"] != OPEN:
                    raise self._conflict(ra, "Return Authorization Is Not Open")
                ra["lines"] = self._lines(body["lines"], ra["division_number"])
            ra.update(text)
            ra["updated_at"] = iso(self.clock.now())
            return self._view(company, ra)

    def transmit(self, number: int, ra_number: int) -> dict:
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            if ra["status"] != OPEN:
                raise self._conflict(ra, "Return Authorization Is Not Open")
            self._transmit(company, ra)
            return self._view(company, ra)

    def _transmit(self, company: Company, ra: dict) -> None:
        now = iso(self.clock.now())
        ra["asn"] = {"asn_number": company.next_asn_number, "transmitted_at": now}
        company.next_asn_number += 1
        ra["status"], ra["updated_at"] = TRANSMITTED, now
        self._emit(company, "RA_TRANSMITTED", ra)

    def cancel(self, number: int, ra_number: int) -> dict:
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            if ra["status"] not in CANCELLABLE:
                raise self._conflict(ra, "Return Authorization Cannot Be Cancelled")
            ra["status"], ra["updated_at"] = CANCELLED, iso(self.clock.now())
            self._emit(company, "RA_CANCELLED", ra)
            return self._view(company, ra)

    def close(self, number: int, ra_number: int, body: dict) -> dict:
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            if ra["status"] not in CLOSABLE:
                raise self._conflict(ra, "Return Authorization Cannot Be Closed")
            if body.get("close_reason") not in CLOSE_REASONS:
                raise SimError(422, "Invalid Close Reason", field="close_reason")
            note = _text(body, "note")
            ra["status"], ra["updated_at"] = CLOSED, iso(self.clock.now())
            ra["close_reason"], ra["close_note"] = body["close_reason"], note
            self._emit(company, "RA_CLOSED", ra)
            return self._view(company, ra)

    @staticmethod
    def _ra(company: Company, ra_number: int) -> dict:
        ra = company.ras.get(ra_number)
        if ra is None:
            raise SimError(404, "Return Authorization Not Found")
        return ra

    @staticmethod
    def _conflict(ra: dict, description: str) -> SimError:
        return SimError(409, description, status=ra["status"])

    def _view(self, company: Company, ra: dict) -> dict:
        """The RA as the API shows it: stored fields plus per-line quantities derived from receipts."""
        view = copy.deepcopy(ra)
        receipt_lines = [line for r in company.receipts if r["ra_number"] == ra["ra_number"]
                         for line in r["lines"]]
        for line in view["lines"]:
            mine = [rl for rl in receipt_lines if rl["ra_line_number"] == line["line_number"]]
            line["qty_received"] = sum(rl["qty_received"] for rl in mine)
            line["qty_received_good"] = sum(rl["qty_received"] for rl in mine if rl["condition"] == "GOOD")
            line["qty_received_damaged"] = line["qty_received"] - line["qty_received_good"]
            line["line_status"] = self._line_status(line["qty_received"], line["qty_authorized"])
        return view

    @staticmethod
    def _line_status(received: int, authorized: int) -> str:
        if received == 0:
            return "NOT_RECEIVED"
        if received < authorized:
            return "PARTIALLY_RECEIVED"
        return "RECEIVED" if received == authorized else "OVER_RECEIVED"

    # ----- receipts ------------------------------------------------------------------------------

    def list_receipts(self, number: int, ra_number: int) -> list[dict]:
        with self.lock:
            company = self.company(number)
            self._ra(company, ra_number)
            return [copy.deepcopy(r) for r in company.receipts if r["ra_number"] == ra_number]

    def post_receipt(self, number: int, ra_number: int, body: dict, idempotency_key: str | None = None,
                     source: str = "3PL") -> tuple[dict, bool]:
        """Record receiving against an RA. Returns (receipt, created?); a repeated key replays."""
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            if idempotency_key and (ra_number, idempotency_key) in company.receipt_by_key:
                receipt_number = company.receipt_by_key[(ra_number, idempotency_key)]
                return copy.deepcopy(self._receipt(company, receipt_number)), False
            receipt = self._post_receipt(company, ra, body, body.get("source") or source)
            if idempotency_key:
                company.receipt_by_key[(ra_number, idempotency_key)] = receipt["receipt_number"]
            return copy.deepcopy(receipt), True

    def _post_receipt(self, company: Company, ra: dict, body: dict, source: str) -> dict:
        if ra["status"] not in AWAITING_RECEIPTS:
            raise self._conflict(ra, "Return Authorization Is Not Awaiting Receipts")
        if source not in SOURCES:
            raise bad_parameter("source")
        raw_lines = body.get("lines")
        if not isinstance(raw_lines, list) or not raw_lines:
            raise SimError(422, "No Lines Were Received", field="lines")
        lines = [self._receipt_line(ra, raw, n) for n, raw in enumerate(raw_lines, start=1)]
        now = iso(self.clock.now())
        received_at = body.get("received_at") or now
        if parse_iso(received_at) is None:
            raise bad_parameter("received_at")
        receipt = {
            "receipt_number": company.next_receipt_number, "ra_number": ra["ra_number"],
            "warehouse_number": ra["warehouse_number"], "asn_number": ra["asn"]["asn_number"],
            "received_at": iso(parse_iso(received_at)), "source": source,
            "tracking_number": _text(body, "tracking_number") if "tracking_number" in body else ra["tracking_number"],
            "updated_at": now, "lines": lines,
        }
        company.next_receipt_number += 1
        company.receipts.append(receipt)
        self._emit(company, "RA_RECEIPT_POSTED", ra, receipt["receipt_number"])
        self._update_status_after_receipt(company, ra, now)
        return receipt

    def _receipt_line(self, ra: dict, raw: Any, n: int) -> dict:
        """A receiving line: names an RA line and/or an item; an item not on the RA is `unexpected`."""
        if not isinstance(raw, dict):
            raise bad_parameter("lines")
        qty = _positive_int(raw.get("qty_received"))
        if qty is None:
            raise line_error(n, "qty_received", "Invalid Quantity")
        condition = raw.get("condition") or "GOOD"
        if condition not in CONDITIONS:
            raise line_error(n, "condition", "Invalid Condition")
        disposition = raw.get("disposition") or ("RESTOCK" if condition == "GOOD" else "SECONDS")
        if disposition not in DISPOSITIONS:
            raise line_error(n, "disposition", "Invalid Disposition")
        ra_line = self._named_ra_line(ra, raw, n)
        names_item = any(raw.get(k) is not None for k in ("upc", "sku_number", "style_number", "color", "size"))
        if names_item or ra_line is None:
            sku = resolve_item(self.catalog, raw, n)
        else:
            sku = self.catalog.by_upc(ra_line["upc"])
        if ra_line is not None and ra_line["upc"] != sku.upc:
            raise line_error(n, "ra_line_number", "Invalid RA Line Number")
        if ra_line is None:
            ra_line = next((line for line in ra["lines"] if line["upc"] == sku.upc), None)
        return {
            "receipt_line_number": n, "ra_line_number": ra_line["line_number"] if ra_line else None,
            "sku_number": sku.sku_number, "style_number": sku.style_number, "color": sku.color,
            "size": sku.size, "upc": sku.upc, "qty_received": qty, "condition": condition,
            "disposition": disposition, "unexpected": ra_line is None, "note": _text(raw, "note"),
        }

    @staticmethod
    def _named_ra_line(ra: dict, raw: dict, n: int) -> dict | None:
        if raw.get("ra_line_number") is None:
            return None
        number = raw["ra_line_number"]
        line = next((line for line in ra["lines"] if is_int(number) and line["line_number"] == number), None)
        if line is None:
            raise line_error(n, "ra_line_number", "Invalid RA Line Number")
        return line

    def _update_status_after_receipt(self, company: Company, ra: dict, now: str) -> None:
        view = self._view(company, ra)
        complete = all(line["qty_received"] >= line["qty_authorized"] for line in view["lines"])
        new_status = RECEIVED if complete else PARTIALLY_RECEIVED
        ra["updated_at"] = now
        if new_status != ra["status"]:
            ra["status"] = new_status
            self._emit(company, "RA_STATUS_CHANGED", ra)

    @staticmethod
    def _receipt(company: Company, receipt_number: int) -> dict:
        return next(r for r in company.receipts if r["receipt_number"] == receipt_number)

    # ----- sandbox receiving (B.9) ------------------------------------------------------------------

    def sim_receive(self, number: int, ra_number: int, body: dict) -> tuple[dict | None, str, float]:
        """A 3PL receipt from a named scenario or explicit `lines`. Returns (receipt or None, RA
        status, when it was recorded: the sandbox's clock unrounded, for `make bench`)."""
        with self.lock:
            company = self.company(number)
            ra = self._ra(company, ra_number)
            recorded = self.clock.precise()
            if "lines" in body:
                receipt = self._post_receipt(company, ra, {"lines": body["lines"]}, "SANDBOX")
            elif body.get("scenario") in SCENARIOS:
                receipt = self._receive_scenario(company, ra, body["scenario"])
            else:
                raise bad_parameter("scenario")
            return copy.deepcopy(receipt), ra["status"], recorded

    def _receive_scenario(self, company: Company, ra: dict, scenario: str) -> dict | None:
        if ra["status"] not in AWAITING_RECEIPTS:
            raise self._conflict(ra, "Return Authorization Is Not Awaiting Receipts")
        if scenario == "none":
            return None
        lines = self._scenario_lines(company, ra, scenario)
        if not lines:
            raise SimError(422, f"Nothing To Receive For Scenario {scenario}")
        return self._post_receipt(company, ra, {"lines": lines}, "SANDBOX")

    def _scenario_lines(self, company: Company, ra: dict, scenario: str) -> list[dict]:
        """Receipt lines per the B.9 table (plus `remainder`: every authorized unit not yet received).

        `none` never gets here.
        """
        ra_lines = ra["lines"]
        exact = [_receipt_unit(line, line["qty_authorized"]) for line in ra_lines]
        first = ra_lines[0]
        if scenario == "exact":
            return exact
        if scenario == "over":
            exact[0]["qty_received"] += 1
            return exact
        if scenario == "partial":
            exact[-1]["qty_received"] -= 1
            return [unit for unit in exact if unit["qty_received"] > 0]
        if scenario == "damaged":
            return self._without_one_of_first(exact) + [_receipt_unit(first, 1, "DAMAGED", "SECONDS")]
        if scenario == "wrong_item":
            wrong = self.catalog.other_size(self.catalog.by_upc(first["upc"]))
            return self._without_one_of_first(exact) + [
                {"upc": wrong.upc, "qty_received": 1, "condition": "WRONG_ITEM", "disposition": "RESTOCK"}]
        # remainder
        received = {line["line_number"]: line["qty_received"] for line in self._view(company, ra)["lines"]}
        return [_receipt_unit(line, line["qty_authorized"] - received[line["line_number"]])
                for line in ra_lines if line["qty_authorized"] > received[line["line_number"]]]

    @staticmethod
    def _without_one_of_first(units: list[dict]) -> list[dict]:
        """All units, minus one of the first line's (that one comes back as something else)."""
        units[0]["qty_received"] -= 1
        return [unit for unit in units if unit["qty_received"] > 0]

    # ----- feeds -----------------------------------------------------------------------------------

    def receipt_feed(self, number: int, limit: int, updated_since: datetime | None = None,
                     cursor: str | None = None) -> dict:
        """B.7: receipts ordered by (updated_at, receipt_number) strictly after a position.

        The cursor encodes the last position served; on an empty page it comes back unchanged.
        """
        with self.lock:
            company = self.company(number)
            if cursor:
                position = self._decode_cursor(cursor)
            else:
                position = (iso(updated_since) if updated_since else "", 0)
            ordered = sorted(company.receipts, key=lambda r: (r["updated_at"], r["receipt_number"]))
            after = [r for r in ordered if (r["updated_at"], r["receipt_number"]) > position]
            page = after[:limit]
            if page:
                next_cursor = self._encode_cursor((page[-1]["updated_at"], page[-1]["receipt_number"]))
            else:
                next_cursor = cursor or self._encode_cursor(position)
            return {"data": copy.deepcopy(page), "next_cursor": next_cursor, "has_more": len(after) > limit}

    @staticmethod
    def _encode_cursor(position: tuple[str, int]) -> str:
        return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str) -> tuple[str, int]:
        try:
            updated_at, receipt_number = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (ValueError, TypeError):
            raise bad_parameter("cursor") from None
        if not isinstance(updated_at, str) or not isinstance(receipt_number, int):
            raise bad_parameter("cursor")
        return updated_at, receipt_number

    def events(self, number: int, after_event_id: int, limit: int) -> dict:
        with self.lock:
            company = self.company(number)
            after = [e for e in company.events if e["event_id"] > after_event_id]
            page = after[:limit]
            return {"data": copy.deepcopy(page),
                    "last_event_id": page[-1]["event_id"] if page else after_event_id,
                    "has_more": len(after) > limit}

    def _emit(self, company: Company, event_type: str, ra: dict, receipt_number: int | None = None) -> None:
        company.events.append({
            "event_id": len(company.events) + 1, "type": event_type, "ra_number": ra["ra_number"],
            "receipt_number": receipt_number, "occurred_at": iso(self.clock.now()),
        })
