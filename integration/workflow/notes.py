"""The Loop note that explains a flag: at most 254 characters, never cut mid-word."""
from __future__ import annotations

from integration.loop.client import NOTE_MAX


def flag_note(ra_number: int | None, items: list[str], limit: int = NOTE_MAX) -> str:
    """`RLM RA 3105: missing 1 x SKU; received damaged 1 x SKU`.

    When every item does not fit, as many whole items as fit are kept and the rest counted.
    """
    head = f"RLM RA {ra_number}: " if ra_number else "RLM: "
    for shown in range(len(items), -1, -1):
        rest = len(items) - shown
        parts = items[:shown]
        if rest:
            parts = [*parts, f"+{rest} more discrepanc{'y' if rest == 1 else 'ies'}"]
        note = head + "; ".join(parts)
        if len(note) <= limit:
            return note
    raise AssertionError("unreachable: the head and a count always fit")
