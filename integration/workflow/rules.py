"""The merchant's criteria as a pure function: (RMA, receipts, criteria, now) → decision.

A decision names every discrepancy and every rule that fired, so the service can always say
why it processed or flagged a return.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from integration.merchants import Criteria

PROCESS = "process"
FLAG = "flag"
REMOVE_AND_PROCESS = "remove_and_process"
CLOSE = "close"
WAIT = "wait"


@dataclass
class Discrepancy:
    rule: str  # missing | condition | unexpected | over_received | value_threshold | expired
    text: str
    sku: str | None = None
    qty: int = 0


@dataclass
class Decision:
    action: str
    rules: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    remove_line_item_ids: list[str] = field(default_factory=list)
    summary: str = ""

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            "rules": self.rules,
            "discrepancies": [d.__dict__ for d in self.discrepancies],
            "remove_line_item_ids": self.remove_line_item_ids,
            "summary": self.summary,
        }


def label(line: dict) -> str:
    """How a SKU is named in notes: STYLE-COLOR-SIZE, as the merchant's storefront SKUs are."""
    parts = [line.get("style_number"), line.get("color"), line.get("size")]
    if all(parts):
        return "-".join(str(p) for p in parts)
    return str(line.get("sku") or line.get("upc") or line.get("sku_number") or "?")


@dataclass
class Tally:
    """What arrived for one RA line."""

    received: int = 0
    by_condition: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def tally(rma_lines: list[dict], receipts: list[dict]) -> tuple[dict[int, Tally], list[dict]]:
    per_line = {line["line_number"]: Tally() for line in rma_lines}
    unexpected: list[dict] = []
    for receipt in receipts:
        for line in receipt.get("lines", []):
            number = line.get("ra_line_number")
            if line.get("unexpected") or number not in per_line:
                unexpected.append(line)
                continue
            qty = int(line.get("qty_received") or 0)
            per_line[number].received += qty
            per_line[number].by_condition[(line.get("condition") or "GOOD").upper()] += qty
    return per_line, unexpected


def decide(rma_lines: list[dict], receipts: list[dict], criteria: Criteria, *, now: datetime,
           first_receipt_at: datetime | None, expires_at: datetime | None,
           return_total: Decimal | None = None) -> Decision:
    per_line, unexpected = tally(rma_lines, receipts)
    anything = any(t.received for t in per_line.values()) or bool(unexpected)

    if not anything:
        if expires_at is not None and now >= expires_at:
            expired = Discrepancy("expired", "nothing received by the RMA's expiry")
            action = CLOSE if criteria.on_expiry == "close" else FLAG
            return Decision(action, ["expired"], [expired], summary=expired.text)
        return Decision(WAIT, summary="waiting for the warehouse to receive the return")

    found: list[Discrepancy] = []
    missing_refs: list[str] = []
    for line in rma_lines:
        got = per_line[line["line_number"]]
        short = int(line["qty_authorized"]) - got.received
        if short > 0:
            found.append(Discrepancy("missing", f"missing {short} x {label(line)}", label(line), short))
            missing_refs.extend(list(line.get("external_line_refs") or [])[-short:])
        elif short < 0 and criteria.flag_over_received:
            found.append(Discrepancy("over_received", f"over-received {-short} x {label(line)}",
                                     label(line), -short))
        for condition, qty in sorted(got.by_condition.items()):
            if condition not in criteria.accepted_conditions and qty:
                found.append(Discrepancy("condition", f"received {condition.lower()} {qty} x {label(line)}",
                                         label(line), qty))
    if criteria.flag_unexpected:
        for line in unexpected:
            qty = int(line.get("qty_received") or 0)
            found.append(Discrepancy("unexpected", f"not on RMA {qty} x {label(line)}", label(line), qty))
    threshold = criteria.value_threshold
    if threshold is not None and return_total is not None and return_total > threshold:
        found.append(Discrepancy("value_threshold",
                                 f"return value {return_total:.2f} above {Decimal(threshold):.2f}"))

    missing = [d for d in found if d.rule == "missing"]
    if missing and not _grace_over(now, first_receipt_at, criteria):
        return Decision(WAIT, summary="part received; waiting for the rest until the grace period ends")

    rules = sorted({d.rule for d in found})
    if not found:
        return Decision(PROCESS, [], [], summary="every authorized unit received in accepted condition")
    if rules == ["missing"] and criteria.on_missing == "remove_and_process":
        return Decision(REMOVE_AND_PROCESS, rules, found, missing_refs,
                        summary="; ".join(d.text for d in found))
    return Decision(FLAG, rules, found, summary="; ".join(d.text for d in found))


def _grace_over(now: datetime, first_receipt_at: datetime | None, criteria: Criteria) -> bool:
    if first_receipt_at is None:
        return False
    return now >= first_receipt_at + timedelta(seconds=criteria.partial_grace_s)


def receipt_progress(rma_lines: list[dict], receipts: list[dict]) -> str:
    """`none`, `partial` or `complete`: which receiving state the RMA is in."""
    per_line, unexpected = tally(rma_lines, receipts)
    if not any(t.received for t in per_line.values()) and not unexpected:
        return "none"
    if all(per_line[ln["line_number"]].received >= int(ln["qty_authorized"]) for ln in rma_lines):
        return "complete"
    return "partial"
