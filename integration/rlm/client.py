"""RLM client behind a transport seam (docs/rlm-api.md, Part B).

Business logic calls `RlmClient`; `JsonTransport` speaks today's JSON REST model. A SOAP
transport (docs/rlm-api.md A.2 conventions) can replace it once RLM confirms its real API.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

import requests

from integration.errors import FinalError
from integration.infra.http import classify, decode_body, send, unreadable

SYSTEM = "rlm"


class RaStatus(StrEnum):
    """A return authorization's status in RLM (docs/rlm-api.md)."""

    OPEN = "OPEN"  # created, not yet transmitted to the warehouse
    TRANSMITTED = "TRANSMITTED"
    PARTIALLY_RECEIVED = "PARTIALLY_RECEIVED"
    RECEIVED = "RECEIVED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"

CLOSE_REASONS = ("LOOP_PROCESSED", "LOOP_FLAG_RESOLVED", "EXPIRED", "CUSTOMER_KEPT", "MANUAL")
# docs/rlm-api.md B.4: lines only while OPEN, the rest until the RA is terminal.
PATCHABLE = ("lines", "carrier", "tracking_number", "notes", "special01", "special02", "special03", "special04")


def describe_error(body: Any) -> tuple[str, str | None]:
    """(description verbatim, the field it names): e.g. ("Invalid Size on Line 2", "size")."""
    if isinstance(body, dict):
        return str(body.get("description") or "error"), body.get("field")
    return str(body)[:200], None


class Transport(Protocol):
    def call(self, method: str, path: str, *, idempotent: bool, params: dict | None = None,
             json: Any = None, headers: dict | None = None) -> tuple[int, dict]: ...


class JsonTransport:
    def __init__(self, base_url: str, company: int, username: str, key: str, *,
                 timeout: tuple[float, float] = (10.0, 60.0), session: requests.Session | None = None,
                 retries: int = 2, slots=None):
        self.base = f"{base_url.rstrip('/')}/api/v1/companies/{company}"
        # The merchant's cap on concurrent RLM calls (integration.infra.semaphore), if any.
        self.slots = slots
        self.timeout = timeout
        self.retries = retries  # quick re-sends of calls that are safe to repeat
        self.http = session or requests.Session()
        self.http.auth = (username, key)

    def call(self, method, path, *, idempotent, params=None, json=None, headers=None):
        if self.slots is None:
            return self._call(method, path, idempotent=idempotent, params=params, json=json, headers=headers)
        with self.slots.held():
            return self._call(method, path, idempotent=idempotent, params=params, json=json, headers=headers)

    def _call(self, method, path, *, idempotent, params=None, json=None, headers=None):
        response = send(self.http, SYSTEM, method, f"{self.base}{path}", timeout=self.timeout,
                        retries=self.retries if idempotent else 0, describe=describe_error,
                        params=params, json=json, headers=headers)
        if not 200 <= response.status_code < 300:
            raise classify(SYSTEM, response, describe_error)
        body = decode_body(response)
        if not isinstance(body, dict):
            raise unreadable(SYSTEM, response)
        # RLM's legacy refusals come back as HTTP 200 with code 0.
        if body.get("code") != 1:
            message, field = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=field, body=body)
        return response.status_code, body


class RlmClient:
    def __init__(self, transport: Transport):
        self.t = transport

    def _get(self, path: str, **params) -> dict:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.t.call("GET", path, idempotent=True, params=clean)[1]

    # --- reference data and items ----------------------------------------------------------
    def warehouses(self) -> list[dict]:
        return self._get("/warehouses")["data"]

    def reason_codes(self) -> list[dict]:
        return self._get("/reason-codes")["data"]

    def divisions(self) -> list[dict]:
        return self._get("/divisions")["data"]

    def find_items(self, *, upc: str | None = None, style_number: str | None = None,
                   color: str | None = None, size: str | None = None) -> list[dict]:
        return self._get("/items", upc=upc, style_number=style_number, color=color, size=size)["data"]

    # --- return authorizations -------------------------------------------------------------
    def create_ra(self, payload: dict) -> tuple[dict, bool]:
        """Create (or find, on replay) the RA for `payload["external_ref"]`; returns (ra, created)."""
        status, body = self.t.call("POST", "/return-authorizations", idempotent=True, json=payload)
        return body, status == 201 and not body.get("replayed")

    def find_ra(self, external_ref: str) -> dict | None:
        data = self._get("/return-authorizations", external_ref=external_ref)["data"]
        return data[0] if data else None

    def list_ras(self, *, external_ref: str | None = None, status: str | None = None,
                 customer_po: str | None = None, updated_since: str | None = None,
                 page_size: int = 100) -> list[dict]:
        """Every RA matching the filters, all pages (`start_row` is 1-based)."""
        found: list[dict] = []
        while True:
            body = self._get("/return-authorizations", external_ref=external_ref, status=status,
                             customer_po=customer_po, updated_since=updated_since,
                             start_row=len(found) + 1, limit_rows=page_size)
            found += body["data"]
            if not body["data"] or len(found) >= body.get("total_records", 0):
                return found

    def get_ra(self, ra_number: int) -> dict:
        return self._get(f"/return-authorizations/{ra_number}")

    def patch_ra(self, ra_number: int, **changes: Any) -> dict:
        """Edit an RA, e.g. `patch_ra(3105, carrier="USPS", tracking_number="9400...")` on a label update."""
        unknown = sorted(set(changes) - set(PATCHABLE))
        if unknown or not changes:
            raise ValueError(f"cannot patch {unknown or 'nothing'}; patchable: {', '.join(PATCHABLE)}")
        # Setting fields to the same values twice is harmless: safe to re-send.
        return self.t.call("PATCH", f"/return-authorizations/{ra_number}", idempotent=True, json=changes)[1]

    def transmit(self, ra_number: int) -> dict:
        return self.t.call("POST", f"/return-authorizations/{ra_number}/transmit", idempotent=False)[1]

    def cancel(self, ra_number: int) -> dict:
        return self.t.call("POST", f"/return-authorizations/{ra_number}/cancel", idempotent=False)[1]

    def close(self, ra_number: int, reason: str, note: str = "") -> dict:
        if reason not in CLOSE_REASONS:
            raise ValueError(f"unknown close reason {reason}")
        return self.t.call("POST", f"/return-authorizations/{ra_number}/close", idempotent=False,
                           json={"close_reason": reason, "note": note})[1]

    # --- receipts and feeds ----------------------------------------------------------------
    def receipts_for(self, ra_number: int) -> list[dict]:
        return self._get(f"/return-authorizations/{ra_number}/receipts")["data"]

    def post_receipt(self, ra_number: int, receipt: dict, idempotency_key: str) -> tuple[dict, bool]:
        """Record receiving (what a 3PL does); the key makes a re-send replay. Returns (receipt, created)."""
        status, body = self.t.call("POST", f"/return-authorizations/{ra_number}/receipts", idempotent=True,
                                   json=receipt, headers={"Idempotency-Key": idempotency_key})
        return body, status == 201 and not body.get("replayed")

    def receipt_page(self, *, cursor: str | None = None, updated_since: str | None = None,
                     limit: int = 100) -> dict:
        """One page of the receipt feed: {data, next_cursor, has_more}."""
        if cursor:
            return self._get("/receipts", cursor=cursor, limit=limit)
        return self._get("/receipts", updated_since=updated_since, limit=limit)

    def events(self, *, after_event_id: int = 0, limit: int = 100) -> dict:
        """One page of the change feed: {data, last_event_id, has_more}; pass last_event_id back."""
        return self._get("/events", after_event_id=after_event_id, limit=limit)

