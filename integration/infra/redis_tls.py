"""Redis over TLS, decided once for every client: the Celery broker (kombu), the RedBeat
schedule, the limiter, locks and metrics (redis-py), the web checks, doctor and Flower.

Heroku Redis serves `rediss://` with a self-signed certificate, so Heroku documents turning
certificate checks off (`ssl_cert_reqs=CERT_NONE`): the connection is still encrypted. Without
a setting, redis-py and RedBeat would refuse that certificate while kombu would accept it, and
one process would reach Redis while another could not. REDIS_SSL_CERT_REQS (none, optional,
required) sets the policy for all of them.
"""
from __future__ import annotations

import os
import ssl
from typing import Any

import redis

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def cert_reqs() -> ssl.VerifyMode:
    """REDIS_SSL_CERT_REQS as an ssl constant; `none` (Heroku's requirement) when unset."""
    raw = (os.environ.get("REDIS_SSL_CERT_REQS") or "none").strip().lower()
    if raw not in CERT_REQS:
        raise ValueError(f"REDIS_SSL_CERT_REQS={raw!r}: use none, optional or required")
    return CERT_REQS[raw]


def ssl_options(url: str) -> dict[str, Any] | None:
    """For a `rediss://` URL, the TLS options kombu's `broker_use_ssl`, RedBeat's
    `redbeat_redis_use_ssl` and redis-py all take; None for a plain `redis://` URL."""
    if not url.startswith("rediss://"):
        return None
    return {"ssl_cert_reqs": cert_reqs()}


def client(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client for `url`, with the TLS policy when the URL asks for TLS."""
    return redis.Redis.from_url(url, **(ssl_options(url) or {}), **kwargs)
