"""The operator pages over many returns: the list's filters and cursor paging, the parked
returns grouped by cause, and a group's preview and bulk retry (Flask test client)."""
from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from integration.ops.queries import reason_key
from integration.store.models import Return
from integration.workflow import lifecycle as lc
from tests.ops.test_pages import basic, csrf, ops, steps  # noqa: F401  (fixtures)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SKU = "SKU unknown to RLM: {} (barcode none); no RMA created. Fix the catalog or SKU mapping, then retry."


def add(sessions, loop_id: str, state: str, updated_at: datetime = T0, merchant: str = "demo",
        **fields) -> int:
    with sessions() as s:
        ret = Return(merchant=merchant, loop_return_id=loop_id, state=state, units=[], rma_lines=[],
                     updated_at=updated_at, **fields)
        s.add(ret)
        s.commit()
        return ret.id


def listed(page: str) -> list[str]:
    return re.findall(r'href="/ops/returns/\w+/(\w+)"', page)


def next_link(page: str) -> str | None:
    found = re.search(r'href="([^"]+)">next page<', page)
    return html.unescape(found.group(1)) if found else None


def test_the_list_pages_by_cursor_through_every_filtered_return_once(ops, sessions):
    def parked(n: int) -> bool:
        return n % 5 != 0

    for n in range(120):  # pairs share an updated_at: the id breaks the tie
        add(sessions, str(5000 + n), lc.NEEDS_ATTENTION if parked(n) else lc.COMPLETE,
            T0 + timedelta(minutes=n // 2), merchant="other" if n % 6 == 0 else "demo",
            attention_reason=SKU.format(n) if parked(n) else None)
    want = [str(5000 + n) for n in sorted((n for n in range(120) if n % 6 and parked(n)),
                                          key=lambda n: (n // 2, n), reverse=True)]
    assert len(want) > 50
    url: str | None = "/ops?merchant=demo&state=needs_attention&reason=sku+UNKNOWN"
    seen, pages = [], []
    while url is not None:
        answer = ops.get(url, headers=basic(), follow_redirects=True)
        assert answer.status_code == 200
        page = answer.get_data(as_text=True)
        seen += listed(page)
        pages.append(page)
        url = next_link(page)
        if url is not None:
            assert "merchant=demo" in url and "state=needs_attention" in url and "reason=sku" in url
    assert seen == want and len(pages) == 2
    assert "first page" not in pages[0] and "first page" in pages[1]
    assert '<span class="state needs_attention">%d</span>' % len(want) in pages[0]  # the counts


def test_since_filters_by_day_and_bad_input_is_a_400(ops, sessions):
    add(sessions, "7001", lc.COMPLETE, T0 - timedelta(days=1))
    add(sessions, "7002", lc.COMPLETE, T0)
    assert listed(ops.get("/ops/returns?since=2026-11-01", headers=basic()).get_data(as_text=True)) == ["7002"]
    assert listed(ops.get("/ops/returns", headers=basic()).get_data(as_text=True)) == ["7002", "7001"]
    filtered = ops.get("/ops/returns?merchant=demo&since=2026-11-01", headers=basic()).get_data(as_text=True)
    assert '<a href="/ops/returns?merchant=demo&amp;state=complete&amp;since=2026-11-01">' in filtered
    bad = ops.get("/ops/returns?after=not-a-cursor", headers=basic())
    assert bad.status_code == 400 and "not a cursor this list gave out" in bad.get_data(as_text=True)
    assert ops.get("/ops/returns?since=yesterday", headers=basic()).status_code == 400


def test_attention_groups_the_parked_returns_with_a_preview_that_changes_nothing(ops, sessions, steps):
    ids = [add(sessions, f"80{n}", lc.NEEDS_ATTENTION, T0 + timedelta(hours=n), attention_step="create_rma",
               attention_reason=SKU.format(f"SKU-{n}")) for n in range(3)]
    add(sessions, "8100", lc.NEEDS_ATTENTION, attention_step="transmit_rma",
        attention_reason="RLM refused to transmit RA 12: closed")
    page = ops.get("/ops/attention", headers=basic()).get_data(as_text=True)
    assert "<strong>3</strong>" in page and "<strong>1</strong>" in page
    assert "key: SKU unknown to RLM: *; no RMA created." in page
    assert 'name="csrf"' in page and "Retry all" in page and "Preview" in page

    key = reason_key(SKU)
    preview = ops.get("/ops/attention/preview", headers=basic(),
                      query_string={"merchant": "demo", "step": "create_rma", "reason_key": key})
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "Nothing has changed yet" in text
    assert listed(text) == ["800", "801", "802"] and "resumes create_rma (back to received)" in text
    assert steps == []
    with sessions() as s:
        assert {s.get(Return, i).state for i in ids} == {lc.NEEDS_ATTENTION}

    form = {"merchant": "demo", "step": "create_rma", "reason_key": key}
    assert ops.post("/ops/attention/retry", headers=basic(), data=form).status_code == 403  # no CSRF
    cross = {**basic(), "Origin": "https://evil.example"}
    token = csrf(ops, "/ops/attention")
    assert ops.post("/ops/attention/retry", headers=cross, data={**form, "csrf": token}).status_code == 403
    assert steps == []
    done = ops.post("/ops/attention/retry", headers=basic(), data={**form, "csrf": token})
    assert done.status_code == 200 and "3 retried, 0 skipped" in done.get_data(as_text=True)
    assert steps == [("create_rma", i) for i in ids]
    empty = ops.get("/ops/attention/preview", headers=basic(), query_string=form, follow_redirects=True)
    assert "no returns of demo are parked at create_rma for that reason now" in empty.get_data(as_text=True)
    unknown = {**form, "merchant": "nobody"}
    assert ops.get("/ops/attention/preview", headers=basic(), query_string=unknown).status_code == 404
    assert ops.post("/ops/attention/retry", headers=basic(), data={**unknown, "csrf": token}).status_code == 404
