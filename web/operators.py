"""Who is asking: the operator a credential belongs to, for the pages (Basic password) and the API
(Bearer token). ADMIN_TOKEN acts as "admin"; each OPERATOR_TOKENS token as its operator's name
(integration/settings.py), which every manual action records. Tokens are compared in constant
time, each one every time, and are never logged or shown.
"""
from __future__ import annotations

import hmac

from flask import current_app

from integration.settings import ADMIN_OPERATOR


def operator_for(credential: str | None) -> str | None:
    """The operator whose token `credential` is, or None."""
    if not credential:
        return None
    config = current_app.config
    tokens = [(ADMIN_OPERATOR, config.get("ADMIN_TOKEN")), *(config.get("OPERATOR_TOKENS") or {}).items()]
    found = None
    for name, token in tokens:
        if token and hmac.compare_digest(credential.encode(), token.encode()):
            found = name
    return found
