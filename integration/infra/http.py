"""One place that turns an HTTP exchange into a parsed body or a typed error.

Retryable: 5xx, 408, 429, timeouts, connection errors and 2xx answers we cannot read (the call's
outcome is unknown, as after a timeout). Final: every other 4xx, any redirect (never followed)
and any other transport failure.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import retry, retry_if_exception, stop_after_attempt
from urllib3.exceptions import NewConnectionError

from integration.errors import FinalError, NoSlot, NotFound, NotSent, RetryableError, UpstreamError

RETRYABLE_4XX = {408, 429}  # request timeout, rate limit; every 5xx is retryable too
# Broken connections mid-answer are as transient as refused ones.
TRANSIENT_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
QUICK_RETRY_MAX_WAIT_S = 2.0  # a server asking for longer than this is left to the task's backoff

Describe = Callable[[Any], "tuple[str, str | None]"]


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_4XX


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def decode_body(response: requests.Response) -> Any:
    """JSON body, or None when the body is not JSON (RLM sends HTML error pages on 5xx)."""
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def classify(system: str, response: requests.Response, describe: Describe) -> UpstreamError:
    """The typed error for a non-2xx response; `describe` pulls (message, code) out of a body."""
    body = decode_body(response)
    status = response.status_code
    message, code = describe(body) if body is not None else (f"HTTP {status}{_where(response)}", None)
    if is_retryable_status(status):
        kind = NotSent if status == 429 else RetryableError  # a 429 did nothing on the server
        return kind(system, message, status=status, code=code, body=body,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status == 404:
        return NotFound(system, message, status=status, code=code, body=body)
    return FinalError(system, message, status=status, code=code, body=body)


def unreadable(system: str, response: requests.Response) -> RetryableError:
    """A 2xx whose body is not what the API sends: the outcome is unknown, as after a timeout."""
    return RetryableError(system, f"unreadable HTTP {response.status_code} answer{_where(response)}",
                          status=response.status_code)


def send(session: requests.Session, system: str, method: str, url: str, *,
         timeout: tuple[float, float], retries: int, describe: Describe,
         before: Callable[[], None] | None = None, **kwargs) -> requests.Response:
    """Send one request; transport failures and 5xx become typed errors, other answers come back.

    `retries` > 0 re-sends quickly inside this call (only for calls that are safe to repeat);
    longer backoff, 429 included, is the Celery task's job. `before` runs ahead of every attempt
    (the rate limiter: a re-send counts against the limit like any request).
    """

    def once() -> requests.Response:
        if before is not None:
            before()
        try:
            # Never followed: requests would carry Loop's X-Authorization header to wherever the
            # Location points (and Basic auth to another path or scheme on the same host).
            response = session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
        except TRANSIENT_EXCEPTIONS as exc:
            # Not sent at all, or sent with the answer lost: only the first is safe to repeat
            # for a call that is not idempotent.
            kind = NotSent if never_sent(exc) else RetryableError
            raise kind(system, f"{type(exc).__name__} on {method} {_path(url)}") from None
        except requests.RequestException as exc:  # bad URL, redirect loop: configuration, not weather
            raise FinalError(system, f"{type(exc).__name__} on {method} {_path(url)}") from None
        if response.status_code >= 500:
            raise classify(system, response, describe)
        if 300 <= response.status_code < 400:
            raise redirected(system, method, url, response)
        return response

    if retries <= 0:
        return once()
    wrapped = retry(
        retry=retry_if_exception(_quickly_retryable),
        stop=stop_after_attempt(retries + 1),
        wait=_wait_honouring_retry_after,
        reraise=True,
    )(once)
    return wrapped()


def redirected(system: str, method: str, url: str, response: requests.Response) -> FinalError:
    """A redirect is configuration (a wrong base URL, http for https), not weather: never retried."""
    location = response.headers.get("Location")
    target = urlsplit(urljoin(url, location)) if location else None
    # Scheme and host only: a Location's path, query or user info stays out of logs and reasons.
    to = f" to {target.scheme}://{target.netloc.rsplit('@', 1)[-1]}" if target and target.netloc else ""
    return FinalError(system, f"{method} {_path(url)} answered a redirect{to} "
                      f"(HTTP {response.status_code}); not followed: configure the right base URL",
                      status=response.status_code)


def never_sent(exc: BaseException) -> bool:
    """The connection was never made (refused, unresolvable, connect timeout), so the request
    cannot have reached the server. A read timeout or a connection dropped mid-answer can follow
    a request the server has already acted on."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _quickly_retryable(exc: BaseException) -> bool:
    # Our own per-merchant limits: the step is rescheduled; a quick re-send would sleep here.
    if isinstance(exc, NoSlot):
        return False
    return isinstance(exc, RetryableError) and (exc.retry_after or 0.0) <= QUICK_RETRY_MAX_WAIT_S


def _wait_honouring_retry_after(state) -> float:
    """0.2 s doubling per attempt, up to 50% jitter, capped; a short Retry-After is a floor."""
    backoff = min(QUICK_RETRY_MAX_WAIT_S, 0.2 * 2 ** (state.attempt_number - 1) * random.uniform(1.0, 1.5))
    return max(backoff, state.outcome.exception().retry_after or 0.0)


def _where(response: requests.Response) -> str:
    request = response.request
    return f" on {request.method} {_path(request.url)}" if request is not None and request.url else ""


def _path(url: str) -> str:
    # Never log query strings: they can carry identifiers we do not want in logs.
    return url.split("?", 1)[0]
