"""Loop Returns API client (see docs/loop-api.md).

Quirk handled here: Loop reports refused actions as HTTP 200 with an error body; success is
only a 2xx whose body is the JSON string "true".
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlparse

import requests

from integration.errors import FinalError, RetryableError
from integration.infra.http import classify, decode_body, send, unreadable

NOTE_MAX = 254  # Loop requires "less than 255 characters"
ELLIPSIS = "…"
DISPOSITION_BATCH = 20  # the API docs allow 30 items per call, the integration guide 20
STATES = ("open", "review", "closed", "cancelled", "expired")
DEFAULT_LIST_STATES = ("open", "closed", "expired")  # what the list answers when no state is asked for
SYSTEM = "loop"


def describe_error(body: Any) -> tuple[str, str | None]:
    """(message, code) from any of Loop's error body shapes."""
    if isinstance(body, dict):
        err = body.get("errors") or body.get("error")
        # A validation 422 has {"message": ..., "errors": {field: [...]}}: its message is on top.
        if isinstance(err, dict) and ("message" in err or "code" in err):
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


def truncate_note(text: str, limit: int = NOTE_MAX) -> str:
    """`text` if it fits, else cut at the last word boundary within `limit` and marked with an ellipsis.

    Only a single word longer than the whole limit is cut mid-word: there is no boundary to use.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    # One character more than fits: if it is a space, the word before it is whole.
    whole_words = re.match(r"(.*\S)\s", text[:room + 1], re.DOTALL)
    kept = whole_words.group(1) if whole_words else text[:room]
    return kept + ELLIPSIS


def list_state(state: str) -> str:
    """A state the list endpoint accepts; older docs' `needs review` is today's `review`."""
    state = "review" if state == "needs review" else state
    if state not in STATES:
        raise ValueError(f"unknown Loop return state {state!r}")
    return state


class LoopClient:
    def __init__(self, base_url: str, api_key: str, api_version: str = "v1", *,
                 timeout: tuple[float, float] = (5.0, 30.0), session: requests.Session | None = None,
                 limiter=None, read_retries: int = 2):
        self.root = base_url.rstrip("/")
        self.base = f"{self.root}/api/{api_version}"
        self._key = api_key
        self.timeout = timeout
        self.http = session or requests.Session()
        self.limiter = limiter  # shared rate limiter: acquire() takes a token or raises NoSlot, never sleeps
        self.read_retries = read_retries

    def _request(self, method: str, path_or_url: str, *, retries: int = 0, **kwargs) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else f"{self.base}{path_or_url}"
        headers = {"X-Authorization": self._key, "Accept": "application/json"}

        def before() -> None:
            if self.limiter is not None:
                self.limiter.acquire()

        response = send(self.http, SYSTEM, method, url, timeout=self.timeout, retries=retries,
                        describe=describe_error, headers=headers, before=before, **kwargs)
        if not 200 <= response.status_code < 300:
            raise classify(SYSTEM, response, describe_error)
        return response

    def _read(self, path_or_url: str, expect: type | tuple[type, ...] = dict, **params) -> Any:
        response = self._request("GET", path_or_url, retries=self.read_retries, params=params or None)
        body = decode_body(response)
        if not isinstance(body, expect):
            raise unreadable(SYSTEM, response)
        return body

    def _action(self, path: str, **kwargs) -> None:
        # Actions are not idempotent: no quick re-send here; callers re-read state first.
        response = self._request("POST", path, **kwargs)
        body = decode_body(response)
        if not is_success(body):
            message, code = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=code, body=body)

    # --- returns -------------------------------------------------------------------------
    def get_return(self, return_id: str) -> dict:
        return self._read("/warehouse/return/details", return_id=return_id)

    def iter_returns(self, *, start: str, end: str, state: str | None = None,
                     filter_by: str = "updated_at", page_size: int = 250,
                     paginate: bool = True) -> Iterator[dict]:
        """Every return in the window in one state (None: Loop's default open + closed + expired).

        Paginated, it follows `nextPageUrl` verbatim to the last page; unpaginated, Loop answers
        one bare array.
        """
        params: dict[str, str | int] = {"from": start, "to": end, "filter": filter_by,
                                        "paginate": str(paginate).lower()}
        if paginate:
            params["pageSize"] = page_size
        if state:
            params["state"] = list_state(state)
        page = self._read("/warehouse/return/list", expect=(dict, list), **params)
        while True:
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("returns") or []
            next_url = page.get("nextPageUrl")
            if not next_url:
                return
            page = self._read(self._same_host(next_url), expect=(dict, list))

    def iter_returns_every_state(self, *, start: str, end: str, filter_by: str = "updated_at",
                                 page_size: int = 250) -> Iterator[dict]:
        """Returns in every state: the default set in one pass, then each state it leaves out.

        A return that changes state between passes can appear twice: dedupe on (`id`, `updated_at`).
        """
        for state in (None, *(s for s in STATES if s not in DEFAULT_LIST_STATES)):
            yield from self.iter_returns(start=start, end=end, state=state, filter_by=filter_by,
                                         page_size=page_size)

    def _same_host(self, next_url: str) -> str:
        """`nextPageUrl` as given; one on another host or scheme would carry our API key away."""
        url = urljoin(self.base, next_url)
        ours, theirs = urlparse(self.root), urlparse(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise FinalError(SYSTEM, f"nextPageUrl points at a foreign host ({theirs.netloc})")
        return url

    def process(self, return_id: str, details: dict[str, str] | None = None) -> None:
        """Queue processing; `details` are copied to the resulting Shopify orders (docs/loop-api.md §3.3)."""
        self._action(f"/warehouse/return/{return_id}/process", json=details or {})

    def flag(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/flag")

    def cancel(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/cancel")

    def close(self, return_id: str) -> None:
        self._action(f"/warehouse/return/{return_id}/close")

    def remove_items(self, return_id: str, line_item_ids: list[str]) -> None:
        self._action(f"/warehouse/return/{return_id}/remove",
                     params={"line_item_id": ",".join(str(i) for i in line_item_ids)})

    def get_notes(self, return_id: str) -> list[dict]:
        try:
            body = self._read(f"/warehouse/return/{return_id}/notes")
        except FinalError as exc:
            if exc.status == 422:  # Loop answers 422 "false" when there are no notes
                return []
            raise
        return body.get("notes") or []

    def create_note(self, return_id: str, content: str) -> None:
        response = self._request("POST", f"/warehouse/return/{return_id}/note",
                                 json={"content": truncate_note(content)})
        body = decode_body(response)
        if isinstance(body, dict) and body.get("errors"):
            message, code = describe_error(body)
            raise FinalError(SYSTEM, message, status=response.status_code, code=code, body=body)

    # --- dispositioning (docs/loop-api.md §3.5) ---------------------------------------------
    def grade(self, items: list[dict]) -> list[dict]:
        """Inspection grades ({line_item_id, description, condition_category, ...}); Loop echoes them."""
        return self._disposition("grade", items)

    def assess(self, items: list[dict]) -> list[dict]:
        """Disposition outcomes ({line_item_id, disposition_outcome, ...}); Loop echoes them."""
        return self._disposition("assess", items)

    def _disposition(self, kind: str, items: list[dict]) -> list[dict]:
        echoed: list[dict] = []
        for first in range(0, len(items), DISPOSITION_BATCH):
            response = self._request("POST", f"/dispositioning/{kind}",
                                     json=items[first:first + DISPOSITION_BATCH])
            body = decode_body(response)
            if not isinstance(body, list):
                raise unreadable(SYSTEM, response)
            echoed += body
        return echoed

    # --- webhooks ------------------------------------------------------------------------
    def list_webhooks(self) -> list[dict]:
        return self._read("/webhooks").get("webhooks") or []

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


__all__ = ["NOTE_MAX", "LoopClient", "RetryableError", "describe_error", "is_success", "truncate_note"]
