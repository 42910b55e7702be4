"""Operator queries, read only: the returns list (filters, keyset paging) and the parked returns
grouped by cause. The CLI and the pages render what these answer.

Paging is by keyset, not offset: a page is "the next `limit` returns after this one" in the
order (updated_at desc, id desc), so page 1,000 costs what page 1 costs, and a return updated
while someone pages moves to the top instead of shifting every later page by one (it may then be
skipped or shown twice, as any live list; nothing else is). `ix_returns_updated_at` serves the
order and the cursor's seek, `ix_returns_merchant_updated_at_id` the same for one merchant.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from integration.ops.paging import Cursor
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow.runner import as_utc

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    rows: list[Return]
    next_cursor: Cursor | None  # None: this is the last page


def return_filters(*, merchant: str | None = None, state: str | None = None,
                   reason: str | None = None, since: datetime | None = None,
                   search: str | None = None) -> list[ColumnElement[bool]]:
    """The list's filters as SQL conditions (the pages count states with the same ones).

    reason: a substring of the attention reason, any case. since: updated at or after.
    search: a Loop return id, an order name (with or without its #) or an RMA number.
    """
    out: list[ColumnElement[bool]] = []
    if merchant:
        out.append(Return.merchant == merchant)
    if state:
        out.append(Return.state == state)
    if reason:
        escaped = reason.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        out.append(Return.attention_reason.ilike(f"%{escaped}%", escape="\\"))
    if since is not None:
        out.append(Return.updated_at >= since)
    if search:
        match = [Return.loop_return_id == search, Return.order_name == search,
                 Return.order_name == f"#{search.lstrip('#')}"]
        if search.isdigit():
            match.append(Return.rma_number == int(search))
        out.append(or_(*match))
    return out


def list_returns(session: Session, *, merchant: str | None = None, state: str | None = None,
                 reason: str | None = None, since: datetime | None = None,
                 search: str | None = None, after: Cursor | None = None,
                 limit: int = PAGE_SIZE) -> Page:
    """One page of returns, most recently updated first (ties: highest id first)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    query = select(Return).where(*return_filters(merchant=merchant, state=state, reason=reason,
                                                 since=since, search=search))
    if after is not None:
        # The seek: `updated_at <= t` is the index range; the rest drops the rows already shown.
        query = query.where(Return.updated_at <= after.updated_at,
                            or_(Return.updated_at < after.updated_at,
                                and_(Return.updated_at == after.updated_at, Return.id < after.id)))
    rows = list(session.scalars(query.order_by(Return.updated_at.desc(), Return.id.desc())
                                .limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], Cursor(as_utc(last.updated_at), last.id))


# --- parked returns, grouped by cause ---------------------------------------------------------
NO_STEP = "none"  # parked with no step to resume (e.g. Loop cancelled after goods arrived)
KEY_LENGTH = 120

# Reasons that end in a list of identifiers that differ from return to return: the list goes.
_ID_LISTS = re.compile(r"(SKU unknown to RLM: )[^;]*")
_NUMBERS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def reason_key(reason: str | None) -> str:
    """The reason with what differs between returns of the same cause taken out, so they group.

    Deliberately simple: every run of digits becomes `#` (RA numbers, amounts, HTTP statuses,
    hours), the SKU list of "SKU unknown to RLM: ..." becomes `*`, spaces are collapsed, and the
    result is cut to KEY_LENGTH characters (the cause is stated first). So "RLM refused RA 3100:
    RA is closed" and "RLM refused RA 3207: RA is closed" share the key "RLM refused RA #: RA is
    closed". Two causes worded alike apart from numbers share a group; a preview shows each
    return's own reason before anything is retried.
    """
    text = _ID_LISTS.sub(r"\1*", reason or "")
    text = _NUMBERS.sub("#", text)
    return _SPACES.sub(" ", text).strip()[:KEY_LENGTH]


def step_label(ret_step: str | None) -> str:
    return ret_step or NO_STEP


@dataclass(frozen=True)
class Group:
    merchant: str
    step: str  # attention_step, or NO_STEP
    reason_key: str
    count: int
    example_reason: str  # the longest-parked return's own reason
    oldest: datetime  # when the longest-parked return last changed (UTC)


def attention_groups(session: Session, merchant: str | None = None) -> list[Group]:
    """Parked (needs_attention) returns per merchant, step and reason key: largest group first.

    Grouped here rather than in SQL: the key is a regular expression, and parked returns are few
    (they wait for a person) even when returns are many.
    """
    query = (select(Return.merchant, Return.attention_step, Return.attention_reason,
                    Return.updated_at)
             .where(Return.state == lc.NEEDS_ATTENTION)
             .order_by(Return.updated_at, Return.id))
    if merchant:
        query = query.where(Return.merchant == merchant)
    seen: dict[tuple[str, str, str], list] = {}  # key -> [count, first reason, first time]
    for name, step, reason, updated_at in session.execute(query):
        key = (name, step_label(step), reason_key(reason))
        if key in seen:
            seen[key][0] += 1
        else:
            seen[key] = [1, reason or "", as_utc(updated_at)]
    groups = [Group(*key, count=count, example_reason=example, oldest=oldest)
              for key, (count, example, oldest) in seen.items()]
    return sorted(groups, key=lambda g: (-g.count, g.oldest, g.merchant, g.step))


def in_group(ret: Return, step: str, key: str) -> bool:
    """Whether `ret` is parked at `step` for a reason with that key."""
    return (ret.state == lc.NEEDS_ATTENTION and step_label(ret.attention_step) == step
            and reason_key(ret.attention_reason) == key)


def parked_in_group(session: Session, merchant: str, step: str, key: str) -> list[Return]:
    """The returns of one group, longest parked first."""
    query = select(Return).where(Return.merchant == merchant, Return.state == lc.NEEDS_ATTENTION)
    query = query.where(Return.attention_step.is_(None) if step == NO_STEP
                        else Return.attention_step == step)
    rows = session.scalars(query.order_by(Return.updated_at, Return.id))
    return [r for r in rows if reason_key(r.attention_reason) == key]
