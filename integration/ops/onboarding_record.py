"""The last onboarding report (check, subscribe, backfill) of each merchant, with who ran it and
when, for the /ops merchants page.

Kept in `feed_cursors` (one row per merchant and `onboarding:<action>`, the report as JSON): a
small per-merchant record the service already has a table for, so no migration, and it holds
nothing secret (reports never do: integration/ops/onboarding.py).
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.ops.onboarding import Report
from integration.store.models import FeedCursor

PREFIX = "onboarding:"
DETAIL_MAX = 1000  # per item: a list of unknown SKUs can be long


def as_dict(report: Report) -> dict:
    return {"action": report.action, "operator": report.operator, "at": report.at.isoformat(),
            "ok": report.ok, "summary": report.summary,
            "items": [{"name": i.name, "status": i.status.value, "detail": i.detail[:DETAIL_MAX]}
                      for i in report.items]}


def keep(session: Session, report: Report) -> None:
    """Replace the merchant's last report of this action; commits."""
    feed = PREFIX + report.action
    row = session.get(FeedCursor, (report.merchant, feed))
    if row is None:
        row = FeedCursor(merchant=report.merchant, feed=feed)
        session.add(row)
    row.cursor = json.dumps(as_dict(report))
    session.commit()


def keep_change(session: Session, merchant: str, operator: str, summary: str) -> None:
    """A change to a stored merchant and who made it, as its kept `change` report (the CLI's and
    the pages' alike): which keys changed, never a value (it may be a secret); commits."""
    keep(session, Report(action="change", merchant=merchant, operator=operator, at=datetime.now(UTC),
                         items=(), summary=summary))


def last_reports(session: Session, merchant: str | None = None) -> dict[str, dict[str, dict]]:
    """{merchant: {action: report as a dict}}; every merchant, or only `merchant`."""
    query = select(FeedCursor).where(FeedCursor.feed.startswith(PREFIX))
    if merchant is not None:
        query = query.where(FeedCursor.merchant == merchant)
    found: dict[str, dict[str, dict]] = {}
    for row in session.scalars(query):
        try:
            report = json.loads(row.cursor or "")
            report["at"] = datetime.fromisoformat(report["at"])
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: as if never run
        found.setdefault(row.merchant, {})[row.feed.removeprefix(PREFIX)] = report
    return found
