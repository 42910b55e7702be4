"""Scrub an error report (a Sentry event) of shopper data and secrets before it leaves.

Pure functions: `scrub_event` is Sentry's `before_send` (workers/error_reporting.py), and can be
tested on plain dicts without the SDK. Three nets, since an exception can carry data anywhere:
values under keys that name shopper data or credentials are replaced; the service's own secrets
(API keys, webhook secrets, the admin token, URL passwords) are cut out of every string, as are
email addresses, `Basic`/`Bearer` credentials and URL passwords; stack frames lose their local
variables and requests their bodies and cookies.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

FILTERED = "[Filtered]"

# Keys whose values are credentials (headers included: Authorization, X-Authorization,
# X-Loop-Signature, Cookie) ...
_SECRET_KEY = re.compile(r"auth|key|secret|token|passw|signature|cookie|credential|dsn", re.IGNORECASE)
# ... or the shopper's data, as Loop names it (docs/loop-api.md) and as we store it.
_SHOPPER_KEYS = {"email", "customer", "customer_detail", "customer_email", "name", "first_name",
                 "middle_name", "last_name", "address", "address1", "address2", "city", "zip",
                 "phone", "company", "ship_from", "shipping_address", "billing_address"}
# Parts of an event that describe the SDK and the machine, never the data.
_UNTOUCHED = {"sdk", "modules", "platform", "timestamp", "event_id", "level"}

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)\s+[\w+/=.~-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]*:)[^@\s/]+@")


def secrets_of(*values: str | None, urls: Iterable[str | None] = ()) -> frozenset[str]:
    """The exact strings to cut out of every report: the given secrets and the passwords of URLs."""
    found = {v for v in values if v}
    for url in urls:
        password = urlsplit(url).password if url else None
        if password:
            found.add(password)
    return frozenset(s for s in found if len(s) >= 4)  # a shorter one would blank out words


def scrub_text(text: str, secrets: frozenset[str] = frozenset()) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret may contain a shorter
        text = text.replace(secret, FILTERED)
    text = _URL_PASSWORD.sub(rf"\g<1>{FILTERED}@", text)
    text = _AUTH_HEADER.sub(rf"\g<1> {FILTERED}", text)
    return _EMAIL.sub("[email]", text)


def scrub_event(event: dict[str, Any], hint: object = None, *,
                secrets: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Sentry's `before_send`: the same event, with nothing of a shopper's or a secret in it."""
    event.pop("user", None)  # the SDK adds an IP only with send_default_pii, which stays off
    request = event.get("request")
    if isinstance(request, dict):
        for part in ("data", "cookies", "query_string"):
            if request.get(part):
                request[part] = FILTERED
    for exception in (event.get("exception") or {}).get("values") or []:
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    return {key: value if key in _UNTOUCHED else _scrub(key, value, secrets)
            for key, value in event.items()}


def _scrub(key: object, value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(key, str) and (_SECRET_KEY.search(key) or key.lower() in _SHOPPER_KEYS):
        return FILTERED if value not in (None, "", [], {}) else value
    if isinstance(value, dict):
        return {k: _scrub(k, v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Headers come as [name, value] pairs: judge the value by the name.
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], str):
            return [value[0], _scrub(value[0], value[1], secrets)]
        return [_scrub(None, item, secrets) for item in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value
