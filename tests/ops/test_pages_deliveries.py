"""/ops/deliveries: failed and invalid webhook deliveries, their filters and pages, and replay."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integration.store.models import WebhookEvent
from tests.ops.test_pages import basic

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def steps():
    return []


@pytest.fixture
def ops(sessions, merchants, steps):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ENQUEUE_STEP": lambda *a: steps.append(a),
                      "ADMIN_TOKEN": "pages-token"})
    return app.test_client()


def add_event(sessions, key: str, status: str, minutes: int, **fields) -> int:
    with sessions() as s:
        ev = WebhookEvent(merchant="demo", dedupe_key=key, body_sha256=key, status=status,
                          received_at=T0 + timedelta(minutes=minutes), **fields)
        s.add(ev)
        s.commit()
        return ev.id


@pytest.fixture
def events(sessions) -> dict[str, int]:
    return {
        "failed": add_event(sessions, "f", "failed", 1, topic="return", trigger="return.updated",
                            loop_return_id="5001", attempts=8, last_error="gave up after 8 attempts",
                            payload={"topic": "return", "loop_return_id": "5001",
                                     "ship_from": {"name": "Pat Shopper"}}),
        "invalid": add_event(sessions, "i", "invalid", 2, last_error='{"id": ["Missing data"]}'),
        "done": add_event(sessions, "d", "done", 3, topic="return", trigger="return.created",
                          payload={"topic": "return"}),
    }


def page(ops, query: str = "") -> str:
    answer = ops.get(f"/ops/deliveries{query}", headers=basic())
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def event_ids(html: str) -> list[int]:
    return [int(cell.split("</td>", 1)[0])
            for cell in html.split("<tbody>", 1)[1].split("<tr>\n    <td>")[1:]]


def rows(html: str) -> int:
    return len(event_ids(html))


def test_the_page_lists_failed_and_invalid_deliveries_without_their_bodies(ops, events):
    html = page(ops)
    assert rows(html) == 2
    assert "return / return.updated" in html and "gave up after 8 attempts" in html
    assert '/ops/returns/demo/5001' in html and "2026-11-27 12:01:00" in html
    assert "Missing data" in html and "Pat Shopper" not in html
    assert html.count(">Replay</button>") == 1  # the invalid one has no body to replay
    assert rows(page(ops, "?status=done")) == 1 and "return.created" in page(ops, "?status=done")
    assert rows(page(ops, "?merchant=acme")) == 0 and "No deliveries match" in page(ops, "?merchant=acme")
    assert rows(page(ops, "?since=2026-11-28")) == 0
    assert ops.get("/ops/deliveries").status_code == 401


def test_older_pages_follow_the_cursor(ops, sessions, monkeypatch):
    monkeypatch.setattr("web.pages.PAGE_SIZE", 2)
    made = [add_event(sessions, f"e{i}", "failed", i) for i in range(5)]
    seen, query = [], ""
    for _ in range(3):
        html = page(ops, query)
        seen += event_ids(html)
        if 'older</a>' not in html:
            break
        query = "?" + html.split('href="/ops/deliveries?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert seen == made[::-1]


@pytest.mark.parametrize("query", ["?after=garbage", "?since=yesterday", "?status=lost"])
def test_a_bad_parameter_is_a_400(ops, query):
    answer = ops.get(f"/ops/deliveries{query}", headers=basic())
    assert answer.status_code == 400 and answer.mimetype == "text/plain"


def test_replay_posts_with_csrf_and_hands_the_event_back(ops, sessions, events, steps):
    html = page(ops, "?status=failed")
    token = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    url = f"/ops/deliveries/{events['failed']}/replay"
    assert ops.post(url, headers=basic(), data={}).status_code == 403
    cross = {**basic(), "Origin": "https://evil.example"}
    assert ops.post(url, headers=cross, data={"csrf": token}).status_code == 403
    assert steps == []
    answer = ops.post(url, headers=basic(), data={"csrf": token, "status": "failed"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/ops/deliveries?status=failed")
    assert steps == [("handle_event", events["failed"])]
    with sessions() as s:
        assert s.get(WebhookEvent, events["failed"]).status == "received"
    after = page(ops)
    assert f"event {events['failed']} (return.updated for return 5001): replaying" in after  # flashed
    assert rows(after) == 1  # no longer failed

    refused = ops.post(f"/ops/deliveries/{events['invalid']}/replay", headers=basic(), data={"csrf": token})
    assert refused.status_code == 303 and "nothing to replay" in page(ops)
    assert ops.post("/ops/deliveries/999999/replay", headers=basic(), data={"csrf": token}).status_code == 404
    assert steps == [("handle_event", events["failed"])]
