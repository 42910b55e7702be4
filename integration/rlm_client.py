"""RLM client behind a transport seam (shared/spec/rlm-api.md, Part B).

Business logic calls `RlmClient`; `JsonTransport` speaks today's JSON REST model. A SOAP
transport (Part A.2 conventions) can replace it once RLM confirms its real API.
"""
from __future__ import annotations

from typing import Any, Protocol

import requests

from .errors import FinalError
from .http import classify, decode_body, send

SYSTEM = "rlm"
CLOSE_REASONS = ("LOOP_PROCESSED", "LOOP_FLAG_RESOLVED", "EXPIRED", "CUSTOMER_KEPT", "MANUAL")


def describe_error(body: Any) -> tuple[str, str | None]:
    if isinstance(body, dict):
        return str(body.get("description") or "error"), body.get("field")
    return str(body)[:200], None


class Transport(Protocol):
    def call(self, method: str, path: str, *, idempotent: bool, params: dict | None = None,
             json: Any = None, headers: dict | None = None) -> tuple[int, dict]: ...


class JsonTransport:
    def __init__(self, base_url: str, company: int, username: str, key: str, *,
                 timeout: tuple[float, float] = (10.0, 60.0), session: requests.Session | None = None):
        self.base = f"{base_url.rstrip('/')}/api/v1/companies/{company}"
        self.timeout = timeout
        self.http = session or requests.Session()
        self.http.auth = (username, key)

    def call(self, method, path, *, idempotent, params=None, json=None, headers=None):
        response = send(self.http, SYSTEM, method, f"{self.base}{path}", timeout=self.timeout,
                        retries=2 if idempotent else 0, params=params, json=json, headers=headers)
        body = decode_body(response)
        if not 200 <= response.status_code < 300:
            raise classify(SYSTEM, response, describe_error)
        # RLM's legacy refusals come back as HTTP 200 with code 0.
        if not isinstance(body, dict) or body.get("code") != 1:
            message, field = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=field, body=body)
        return response.status_code, body


class RlmClient:
    def __init__(self, transport: Transport):
        self.t = transport

    def _get(self, path: str, **params) -> dict:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.t.call("GET", path, idempotent=True, params=clean)[1]

    def find_items(self, *, upc: str | None = None, style_number: str | None = None,
                   color: str | None = None, size: str | None = None) -> list[dict]:
        return self._get("/items", upc=upc, style_number=style_number, color=color, size=size)["data"]

    def create_ra(self, payload: dict) -> tuple[dict, bool]:
        """Create (or find, on replay) the RA for `payload["external_ref"]`; returns (ra, created)."""
        status, body = self.t.call("POST", "/return-authorizations", idempotent=True, json=payload)
        return body, status == 201 and not body.get("replayed")

    def find_ra(self, external_ref: str) -> dict | None:
        data = self._get("/return-authorizations", external_ref=external_ref)["data"]
        return data[0] if data else None

    def get_ra(self, ra_number: int) -> dict:
        return self._get(f"/return-authorizations/{ra_number}")

    def transmit(self, ra_number: int) -> dict:
        return self.t.call("POST", f"/return-authorizations/{ra_number}/transmit", idempotent=False)[1]

    def cancel(self, ra_number: int) -> dict:
        return self.t.call("POST", f"/return-authorizations/{ra_number}/cancel", idempotent=False)[1]

    def close(self, ra_number: int, reason: str, note: str = "") -> dict:
        if reason not in CLOSE_REASONS:
            raise ValueError(f"unknown close reason {reason}")
        return self.t.call("POST", f"/return-authorizations/{ra_number}/close", idempotent=False,
                           json={"close_reason": reason, "note": note})[1]

    def receipts_for(self, ra_number: int) -> list[dict]:
        return self._get(f"/return-authorizations/{ra_number}/receipts")["data"]

    def receipt_page(self, *, cursor: str | None = None, updated_since: str | None = None,
                     limit: int = 100) -> dict:
        """One page of the receipt feed: {data, next_cursor, has_more}."""
        if cursor:
            return self._get("/receipts", cursor=cursor, limit=limit)
        return self._get("/receipts", updated_since=updated_since, limit=limit)


def make_rlm_client(merchant) -> RlmClient:
    return RlmClient(JsonTransport(merchant.rlm_base_url, merchant.rlm_company,
                                   merchant.rlm_username, merchant.rlm_key))
