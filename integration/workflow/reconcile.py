"""The Loop reconciliation pull: what changed in Loop's returns list since the last pull goes
through the same path as a webhook. It finds returns whose webhooks never arrived."""
from __future__ import annotations

from datetime import datetime, timedelta

from integration.store.db import read_scope, session_scope
from integration.store.models import FeedCursor
from integration.store.status import find_return
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.events import ingest_return
from integration.workflow.runner import as_utc

# The Loop list omits review and cancelled unless asked for them by name (docs/loop-api.md §3.2).
LOOP_LIST_STATES = tuple(lc.LoopState)


def reconcile_loop(ctx: Context, merchant_name: str, overlap_s: float = 3600.0) -> int:
    """Pull Loop's returns list since the last pull and feed what changed through the same path.

    This is what finds returns whose webhooks never arrived (we were down, Loop gave up).
    """
    merchant = ctx.merchant(merchant_name)
    loop = ctx.loop(merchant)
    now = ctx.now()
    with read_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "loop_returns"))
        last = datetime.fromisoformat(row.cursor) if row and row.cursor else now - timedelta(days=7)
    start = max(as_utc(last) - timedelta(seconds=overlap_s), now - timedelta(days=119))
    fmt = "%Y-%m-%d %H:%M:%S"
    seen = 0
    for state in LOOP_LIST_STATES:
        for item in loop.iter_returns(start=start.strftime(fmt), end=now.strftime(fmt), state=state):
            news = _news(ctx, merchant.name, item)
            if news is None:
                continue
            # A known return whose listed state differs: act only on what its details say now,
            # as for webhooks (a list page is a snapshot, and may be stale by the time we act).
            current = loop.get_return(str(item["id"])) if news == "changed" else item
            ingest_return(ctx, merchant, current, cause="found by the Loop returns pull")
            seen += 1
    with session_scope(ctx.sessions) as s:
        row = s.get(FeedCursor, (merchant.name, "loop_returns")) or FeedCursor(
            merchant=merchant.name, feed="loop_returns")
        row.cursor = now.isoformat()
        s.add(row)
    return seen


def _news(ctx: Context, merchant: str, item: dict) -> str | None:
    """"new" (never seen), "changed" (its listed state differs from ours), or None."""
    with read_scope(ctx.sessions) as s:
        ret = find_return(s, merchant, str(item["id"]))
        if ret is None:
            return "new"
        return "changed" if ret.loop_state != lc.LoopState.of(item.get("state")) else None
