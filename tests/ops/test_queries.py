"""The operator queries (integration/ops/queries.py): the filtered, keyset-paged returns list and
the parked returns grouped by cause. On SQLite and PostgreSQL (the `sessions` fixture)."""
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from integration.ops.paging import BadCursor
from integration.ops.queries import (
    NO_STEP,
    Cursor,
    attention_groups,
    list_returns,
    reason_key,
)
from integration.store.models import Return
from integration.workflow import lifecycle as lc

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def add(sessions, loop_id: str, *, merchant: str = "demo", state: str = lc.COMPLETE,
        updated_at: datetime = T0, **fields) -> int:
    with sessions() as s:
        ret = Return(merchant=merchant, loop_return_id=loop_id, state=state, units=[], rma_lines=[],
                     updated_at=updated_at, **fields)
        s.add(ret)
        s.commit()
        return ret.id


@pytest.fixture
def hundred_twenty(sessions) -> list[dict]:
    """120 returns of two merchants in three states, every third pair of rows sharing an
    updated_at to the microsecond (the id breaks the tie), some parked with a reason."""
    rows = []
    for n in range(120):
        row = {"loop_id": str(1000 + n), "merchant": "demo" if n % 4 else "other",
               "state": (lc.COMPLETE, lc.TRANSMITTED, lc.NEEDS_ATTENTION)[n % 3],
               "updated_at": T0 + timedelta(minutes=n // 3 * 7, microseconds=n % 2)}
        reason = f"RLM refused RA {n}: RA is closed" if row["state"] == lc.NEEDS_ATTENTION else None
        row["id"] = add(sessions, row["loop_id"], merchant=row["merchant"], state=row["state"],
                        updated_at=row["updated_at"], attention_reason=reason)
        row["reason"] = reason
        rows.append(row)
    return rows


def expected(rows, **match) -> list[str]:
    keep = [r for r in rows if all(match[k](r[k]) if callable(match[k]) else r[k] == match[k]
                                   for k in match)]
    keep.sort(key=lambda r: (r["updated_at"], r["id"]), reverse=True)
    return [r["loop_id"] for r in keep]


def walk(sessions, limit: int, **filters) -> tuple[list[str], int]:
    """Every page to the end, through the encoded cursor; the ids in order and the page count."""
    seen, after, pages = [], None, 0
    while True:
        with sessions() as s:
            page = list_returns(s, after=after, limit=limit, **filters)
        pages += 1
        assert len(page.rows) <= limit
        seen += [r.loop_return_id for r in page.rows]
        if page.next_cursor is None:
            return seen, pages
        token = page.next_cursor.encode()
        assert token.replace("-", "").replace("_", "").isalnum()  # url-safe as it is
        after = Cursor.decode(token)


def test_paging_through_120_returns_gives_each_once_in_order(sessions, hundred_twenty):
    seen, pages = walk(sessions, 50)
    assert seen == expected(hundred_twenty) and pages == 3
    assert walk(sessions, 7)[0] == expected(hundred_twenty)  # ties fall across page ends
    assert walk(sessions, 120) == (expected(hundred_twenty), 1)


def test_paging_with_filters_gives_each_matching_return_once_in_order(sessions, hundred_twenty):
    since = T0 + timedelta(minutes=70)
    cases = [
        ({"merchant": "demo"}, {"merchant": "demo"}),
        ({"state": lc.NEEDS_ATTENTION}, {"state": lc.NEEDS_ATTENTION}),
        ({"merchant": "demo", "state": lc.TRANSMITTED}, {"merchant": "demo", "state": lc.TRANSMITTED}),
        ({"since": since}, {"updated_at": lambda at: at >= since}),
        ({"reason": "ra is CLOSED"}, {"reason": lambda r: r is not None}),  # any case
        ({"reason": "RA 11:"}, {"reason": lambda r: r is not None and "RA 11:" in r}),
        ({"merchant": "other", "reason": "refused", "since": since},
         {"merchant": "other", "reason": lambda r: r is not None, "updated_at": lambda at: at >= since}),
    ]
    for filters, match in cases:
        want = expected(hundred_twenty, **match)
        assert want, filters
        assert walk(sessions, 5, **filters)[0] == want, filters


def test_a_reason_filter_matches_literally(sessions):
    add(sessions, "1", state=lc.NEEDS_ATTENTION, attention_reason="refund 100% failed")
    add(sessions, "2", state=lc.NEEDS_ATTENTION, attention_reason="refund 1000 failed")
    with sessions() as s:
        assert [r.loop_return_id for r in list_returns(s, reason="100%").rows] == ["1"]
        assert list_returns(s, reason="refund_").rows == []


def test_a_malformed_cursor_is_a_clear_value_error():
    good = Cursor(T0, 42).encode()
    assert Cursor.decode(good) == Cursor(T0, 42)
    junk = ["", "not-a-cursor", good[:-3], "!!!!",
            base64.urlsafe_b64encode(b"yesterday|42").decode(),
            base64.urlsafe_b64encode(b"2026-11-01T12:00:00+00:00|-1").decode(),
            base64.urlsafe_b64encode(b"\xff\xfe").decode()]
    for token in junk:
        with pytest.raises(BadCursor, match="not a cursor this list gave out"):
            Cursor.decode(token)
    assert issubclass(BadCursor, ValueError)


def test_reason_keys_leave_out_numbers_and_unknown_skus():
    assert reason_key("RLM refused RA 3100: RA is closed") == reason_key(
        "RLM refused RA 3207:  RA is closed") == "RLM refused RA #: RA is closed"
    sku = "SKU unknown to RLM: {} (barcode {}); no RMA created. Fix the catalog or SKU mapping, then retry."
    assert reason_key(sku.format("PT310-KHAKI-30", "0123")) == reason_key(sku.format("NOSUCH", "none")) == (
        "SKU unknown to RLM: *; no RMA created. Fix the catalog or SKU mapping, then retry.")
    assert reason_key("RLM answered 500: internal error") != reason_key("RLM answered 422: bad line")
    assert len(reason_key("x" * 3000)) == 120 and reason_key(None) == ""


def test_attention_groups_count_parked_returns_by_merchant_step_and_cause(sessions):
    sku = "SKU unknown to RLM: {} (barcode none); no RMA created. Fix the catalog or SKU mapping, then retry."
    for n, name in enumerate(("A-1", "B-22", "C")):
        add(sessions, f"s{n}", state=lc.NEEDS_ATTENTION, attention_step="create_rma",
            attention_reason=sku.format(name), updated_at=T0 + timedelta(hours=n))
    add(sessions, "r1", state=lc.NEEDS_ATTENTION, attention_step="cancel_rma",
        attention_reason="RLM refused RA 3100: RA is closed", updated_at=T0 + timedelta(hours=5))
    add(sessions, "r2", state=lc.NEEDS_ATTENTION, attention_step="cancel_rma",
        attention_reason="RLM refused RA 3207: RA is closed", updated_at=T0 + timedelta(hours=4))
    add(sessions, "n1", state=lc.NEEDS_ATTENTION, attention_step=None,
        attention_reason="Loop return cancelled after goods were received in RLM (RA 9); review by hand")
    add(sessions, "o1", merchant="other", state=lc.NEEDS_ATTENTION, attention_step="create_rma",
        attention_reason=sku.format("Z"))
    # Not parked: a reason kept on a finished return, and a retried one.
    add(sessions, "c1", state=lc.COMPLETE, attention_reason="Loop could not process the return")
    add(sessions, "t1", state=lc.RECEIVED, attention_step="create_rma", attention_reason=sku.format("Q"))

    with sessions() as s:
        groups = attention_groups(s)
        demo_only = attention_groups(s, "demo")
    summary = [(g.merchant, g.step, g.count) for g in groups]
    assert summary[:2] == [("demo", "create_rma", 3), ("demo", "cancel_rma", 2)]
    assert sorted(summary[2:]) == [("demo", NO_STEP, 1), ("other", "create_rma", 1)]
    sku_group, refused = groups[0], groups[1]
    assert sku_group.reason_key.startswith("SKU unknown to RLM: *;")
    assert sku_group.example_reason == sku.format("A-1") and sku_group.oldest == T0  # the longest parked
    assert refused.reason_key == "RLM refused RA #: RA is closed"
    assert refused.example_reason == "RLM refused RA 3207: RA is closed"
    assert refused.oldest == T0 + timedelta(hours=4)
    assert {(g.merchant, g.count) for g in demo_only} == {("demo", 3), ("demo", 2), ("demo", 1)}
