"""Loop Returns API client (see shared/spec/loop-api.md).

Quirk handled here: Loop reports refused actions as HTTP 200 with an error body; success is
only a 2xx whose body is the JSON string "true".
"""
from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urlparse

import requests

from .errors import FinalError, RetryableError
from .http import classify, decode_body, send

NOTE_MAX = 254  # Loop requires "less than 255 characters"
SYSTEM = "loop"


def describe_error(body: Any) -> tuple[str, str | None]:
    """(message, code) from any of Loop's error body shapes."""
    if isinstance(body, dict):
        err = body.get("errors") or body.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            # The 401 body keeps "401" in `code` and the text code in `http_code`.
            if code == "401" and err.get("http_code"):
                code = err["http_code"]
            return str(err.get("message") or code or "error"), code
        for key in ("message", "content"):
            if isinstance(body.get(key), str):
                return body[key], None
    return str(body)[:200], None


def is_success(body: Any) -> bool:
    return body is True or body == "true"


class LoopClient:
    def __init__(self, base_url: str, api_key: str, api_version: str = "v1", *,
                 timeout: tuple[float, float] = (5.0, 30.0), session: requests.Session | None = None,
                 limiter=None):
        self.root = base_url.rstrip("/")
        self.base = f"{self.root}/api/{api_version}"
        self._key = api_key
        self.timeout = timeout
        self.http = session or requests.Session()
        self.limiter = limiter  # shared rate limiter (acquire() blocks or raises RetryableError)

    def _request(self, method: str, path_or_url: str, *, retries: int = 0, **kwargs) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else f"{self.base}{path_or_url}"
        if self.limiter is not None:
            self.limiter.acquire()
        headers = {"X-Authorization": self._key, "Accept": "application/json"}
        response = send(self.http, SYSTEM, method, url, timeout=self.timeout, retries=retries,
                        headers=headers, **kwargs)
        if not 200 <= response.status_code < 300:
            raise classify(SYSTEM, response, describe_error)
        return response

    def _read(self, path: str, **params) -> Any:
        return decode_body(self._request("GET", path, retries=2, params=params))

    def _action(self, path: str, **kwargs) -> None:
        # Actions are not idempotent: no quick re-send here; callers re-read state first.
        response = self._request("POST", path, **kwargs)
        body = decode_body(response)
        if not is_success(body):
            message, code = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=code)

    # --- returns -------------------------------------------------------------------------
    def get_return(self, return_id: str) -> dict:
        return self._read("/warehouse/return/details", return_id=return_id)

    def iter_returns(self, *, start: str, end: str, state: str | None = None,
                     filter_by: str = "updated_at", page_size: int = 250) -> Iterator[dict]:
        """Every return in the window, following `nextPageUrl` verbatim to the last page."""
        params = {"from": start, "to": end, "filter": filter_by, "paginate": "true",
                  "pageSize": page_size}
        if state:
            params["state"] = state
        page = self._read("/warehouse/return/list", **params)
        while True:
            yield from page.get("returns") or []
            next_url = page.get("nextPageUrl")
            if not next_url:
                return
            if urlparse(next_url).netloc != urlparse(self.root).netloc:
                raise FinalError(SYSTEM, "nextPageUrl points at a foreign host")
            page = decode_body(self._request("GET", next_url, retries=2))

    def process(self, return_id: str, details: dict[str, str] | None = None) -> None:
        self._action(f"/warehouse/return/{return_id}/process", json=details or {})

    def flag(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/flag")

    def cancel(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/cancel")

    def close(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/close")

    def remove_items(self, return_id: str, line_item_ids: list[str]) -> None:
        self._action(f"/warehouse/return/{return_id}/remove",
                     params={"line_item_id": ",".join(line_item_ids)})

    def get_notes(self, return_id: str) -> list[dict]:
        try:
            body = self._read(f"/warehouse/return/{return_id}/notes")
        except FinalError as exc:
            if exc.status == 422:  # Loop answers 422 "false" when there are no notes
                return []
            raise
        return body.get("notes", []) if isinstance(body, dict) else []

    def create_note(self, return_id: str, content: str) -> None:
        response = self._request("POST", f"/warehouse/return/{return_id}/note",
                                 json={"content": content[:NOTE_MAX]})
        body = decode_body(response)
        if isinstance(body, dict) and body.get("errors"):
            message, code = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=code)

    # --- webhooks ------------------------------------------------------------------------
    def list_webhooks(self) -> list[dict]:
        return self._read("/webhooks").get("webhooks", [])

    def ensure_webhooks(self, url: str, triggers: dict[str, list[str]]) -> list[dict]:
        """Create (or re-activate) only the missing subscriptions; Loop defaults to inactive."""
        have = {(w.get("topic"), w.get("trigger"), w.get("url")): w for w in self.list_webhooks()}
        changed = []
        for topic, names in triggers.items():
            for trigger in names:
                body = {"topic": topic, "trigger": trigger, "url": url, "status": "active"}
                existing = have.get((topic, trigger, url))
                if existing is None:
                    changed.append(decode_body(self._request("POST", "/webhooks", json=body)))
                elif existing.get("status") != "active":
                    self._request("PUT", f"/webhooks/{existing['id']}", json=body)
                    changed.append({**existing, "status": "active"})
        return changed


__all__ = ["LoopClient", "describe_error", "is_success", "NOTE_MAX", "RetryableError"]
