"""What the warehouse found, per Loop unit, in Loop's grading vocabulary (docs/loop-api.md §3.5)."""
from __future__ import annotations

from datetime import datetime

from integration.workflow.rules import label

# RLM receipt condition -> Loop condition_category.
CATEGORY = {"GOOD": "grade_a", "MISSING_TAGS": "grade_b", "DAMAGED": "grade_c",
            "DEFECTIVE": "grade_d", "WRONG_ITEM": "incorrect_item"}


def grades(rma_lines: list[dict], receipts: list[dict], inspected_at: datetime) -> list[dict]:
    """One grade per authorized Loop unit: the conditions received against its RA line, handed
    out to the line's units in order, and `missing` for units that never arrived."""
    conditions: dict[int, list[str]] = {}
    for receipt in receipts:
        for line in receipt.get("lines", []):
            number = line.get("ra_line_number")
            if number is None or line.get("unexpected"):
                continue  # not one of the shopper's units: nothing in Loop to grade
            qty = int(line.get("qty_received") or 0)
            conditions.setdefault(number, []).extend([(line.get("condition") or "GOOD").upper()] * qty)
    stamp = inspected_at.strftime("%Y-%m-%d %H:%M:%S")
    out = []
    for line in rma_lines:
        found = conditions.get(line["line_number"], [])
        for i, unit in enumerate(line.get("external_line_refs") or []):
            condition = found[i] if i < len(found) else None
            out.append({
                "line_item_id": int(unit) if str(unit).isdigit() else unit,
                "description": (f"received {condition.lower()}" if condition else "not received")
                + f": {label(line)}",
                "condition_category": CATEGORY.get(condition, "grade_a") if condition else "missing",
                "return_processor": "RLM warehouse receipt",
                "inspected_at": stamp,
            })
    return out
