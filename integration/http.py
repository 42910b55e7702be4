"""One place that turns an HTTP exchange into a parsed body or a typed error."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import requests
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .errors import FinalError, NotFound, RetryableError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def decode_body(response: requests.Response) -> Any:
    """JSON body, or None when the body is not JSON (RLM sends HTML error pages on 5xx)."""
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def classify(system: str, response: requests.Response, describe: Callable[[Any], tuple[str, str | None]]) -> Exception:
    """The typed error for a non-2xx response; `describe` pulls (message, code) out of a body."""
    body = decode_body(response)
    message, code = describe(body) if body is not None else (f"HTTP {response.status_code}", None)
    status = response.status_code
    if status in RETRYABLE_STATUS:
        return RetryableError(system, message, status=status, code=code,
                              retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status == 404:
        return NotFound(system, message, status=status, code=code, body=body)
    return FinalError(system, message, status=status, code=code, body=body)


def send(session: requests.Session, system: str, method: str, url: str, *,
         timeout: tuple[float, float], retries: int, **kwargs) -> requests.Response:
    """Send one request; connection errors and timeouts become RetryableError.

    `retries` > 0 re-sends quickly inside this call (only for calls that are safe to repeat);
    longer backoff is the Celery task's job.
    """

    def once() -> requests.Response:
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableError(system, f"{type(exc).__name__} on {method} {_path(url)}") from None
        if response.status_code >= 500:
            raise RetryableError(system, f"HTTP {response.status_code} on {method} {_path(url)}",
                                 status=response.status_code)
        return response

    if retries <= 0:
        return once()
    wrapped = retry(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
        reraise=True,
    )(once)
    return wrapped()


def _path(url: str) -> str:
    # Never log query strings: they can carry identifiers we do not want in logs.
    return url.split("?", 1)[0]
