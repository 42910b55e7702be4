"""The shadow agreement report (docs/operations.md, *Shadow mode*): per merchant, the returns
decided in shadow mode, how many a person then handled in Loop as we would have (agreed) or
otherwise (disagreed), how many still wait for a person, and for each disagreement our rules and
reasons next to the person's action.

`shadow_returns` reads the rows; `agreement_report` is a pure function of them. The CLI
(`rlm-loop shadow report`) and the page (/ops/shadow) render the same result.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.store.models import Return
from integration.workflow.runner import as_utc
from integration.workflow.shadow import PERSON_ACTIONS, agrees


@dataclass(frozen=True)
class ShadowReturn:
    """One return decided in shadow mode, as the report needs it."""

    merchant: str
    loop_return_id: str
    rma_number: int | None
    decided_at: datetime
    would: str  # our decision: process, remove_and_process, flag, close
    rules: list[str]  # the rules that fired (none for a process)
    reasons: list[str]  # each discrepancy, in words
    summary: str
    note: str | None  # the Loop note a flag would have posted
    person_action: str | None  # the Loop state a person left it in; None: nobody yet
    person_acted_at: datetime | None


@dataclass(frozen=True)
class Disagreement:
    loop_return_id: str
    rma_number: int | None
    decided_at: datetime
    would: str
    rules: list[str]
    reasons: list[str]
    summary: str
    note: str | None
    person: str  # what the person did, in words
    person_acted_at: datetime | None


@dataclass(frozen=True)
class MerchantAgreement:
    merchant: str
    decided: int = 0
    agreed: int = 0
    disagreed: int = 0
    waiting: int = 0  # decided, no person has acted in Loop yet
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def agreement_rate(self) -> float | None:
        """Agreed of those a person has acted on; None before any."""
        acted = self.agreed + self.disagreed
        return self.agreed / acted if acted else None

    def as_dict(self) -> dict:
        return {**asdict(self), "agreement_rate": self.agreement_rate}


def shadow_returns(session: Session, merchant: str | None = None,
                   since: datetime | None = None) -> list[ShadowReturn]:
    """Returns decided in shadow mode (of one merchant, decided on or after `since`), oldest first."""
    query = select(Return).where(Return.shadow_decided_at.is_not(None))
    if merchant is not None:
        query = query.where(Return.merchant == merchant)
    if since is not None:
        query = query.where(Return.shadow_decided_at >= since)
    rows = []
    for r in session.scalars(query.order_by(Return.shadow_decided_at, Return.id)):
        detail, decided_at = r.decision_detail or {}, as_utc(r.shadow_decided_at)
        assert decided_at is not None  # selected for it
        rows.append(ShadowReturn(
            merchant=r.merchant, loop_return_id=r.loop_return_id, rma_number=r.rma_number,
            decided_at=decided_at, would=r.decision or detail.get("action") or "",
            rules=list(detail.get("rules") or []),
            reasons=[d.get("text", "") for d in detail.get("discrepancies") or []],
            summary=detail.get("summary") or "", note=r.loop_note, person_action=r.person_action,
            person_acted_at=as_utc(r.person_acted_at)))
    return rows


def agreement_report(rows: Iterable[ShadowReturn]) -> list[MerchantAgreement]:
    """Per merchant (by name): decided, agreed, disagreed, waiting, and each disagreement."""
    counts: dict[str, dict[str, int]] = {}
    disagreements: dict[str, list[Disagreement]] = {}
    for row in rows:
        c = counts.setdefault(row.merchant, {"decided": 0, "agreed": 0, "disagreed": 0, "waiting": 0})
        found = disagreements.setdefault(row.merchant, [])
        c["decided"] += 1
        if row.person_action is None:
            c["waiting"] += 1
        elif agrees(row.would, row.person_action):
            c["agreed"] += 1
        else:
            c["disagreed"] += 1
            found.append(Disagreement(
                loop_return_id=row.loop_return_id, rma_number=row.rma_number,
                decided_at=row.decided_at, would=row.would, rules=row.rules, reasons=row.reasons,
                summary=row.summary, note=row.note, person=person_text(row.person_action),
                person_acted_at=row.person_acted_at))
    return [MerchantAgreement(merchant=name, **counts[name], disagreements=disagreements[name])
            for name in sorted(counts)]


def person_text(loop_state: str) -> str:
    return next((text for state, text in PERSON_ACTIONS.items() if state == loop_state), loop_state)
