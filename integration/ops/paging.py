"""The keyset cursor the operator lists hand out: where a page ended, as (time, id) of its last
row, opaque and URL-safe. A page is "the next rows after this one", so page 1,000 costs what
page 1 costs (queries.list_returns, deliveries.list_deliveries)."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from integration.workflow.runner import as_utc


class BadCursor(ValueError):
    """A cursor that is not one a list gave out (mangled, truncated, from elsewhere)."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's (time, id), the time being the list's order (updated_at
    for returns, received_at for deliveries). Opaque and URL-safe when encoded."""

    updated_at: datetime
    id: int

    def encode(self) -> str:
        text = f"{as_utc(self.updated_at).isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            at, _, ident = raw.partition("|")
            cursor = cls(as_utc(datetime.fromisoformat(at)), int(ident))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadCursor(f"not a cursor this list gave out: {token[:40]!r}") from None
        if cursor.id < 1:
            raise BadCursor(f"not a cursor this list gave out: {token[:40]!r}")
        return cursor
