"""Loop's webhook signature: base64(HMAC-SHA256(secret, raw body bytes))."""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def sign(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(secrets: Iterable[str], body: bytes, header: str | None) -> bool:
    """True if any configured secret signs these exact bytes (several allowed, for rotation)."""
    if not header:
        return False
    given = header.strip().encode()
    ok = False
    for secret in secrets:
        # Check every secret so the time taken does not reveal which one matched.
        ok |= hmac.compare_digest(sign(secret, body).encode(), given)
    return ok
