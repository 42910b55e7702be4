"""The failed / invalid webhook deliveries list (integration/ops/deliveries.py): filters, keyset
paging on (received_at desc, id desc), and the cursor."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integration.ops.deliveries import decode_cursor, encode_cursor, list_deliveries
from integration.store.models import WebhookEvent

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def add_event(sessions, key: str, status: str, at: datetime, merchant: str = "demo", **fields) -> int:
    with sessions() as s:
        ev = WebhookEvent(merchant=merchant, dedupe_key=key, body_sha256=key, status=status,
                          received_at=at, **fields)
        s.add(ev)
        s.commit()
        return ev.id


def ids(page) -> list[int]:
    return [d.id for d in page.rows]


def test_failed_and_invalid_newest_first_a_page_at_a_time(sessions):
    # Three share one received_at: the id breaks the tie, so no row is skipped or repeated.
    made = [add_event(sessions, f"f{i}", "failed", T0 + timedelta(minutes=min(i, 3)),
                      last_error=f"gave up after {i} attempts", attempts=i) for i in range(6)]
    invalid = add_event(sessions, "bad", "invalid", T0 + timedelta(hours=1), last_error='{"id": ["Missing"]}')
    done = add_event(sessions, "ok", "done", T0 + timedelta(hours=2), payload={"topic": "return"})
    add_event(sessions, "other", "failed", T0 + timedelta(hours=3), merchant="acme")
    newest_first = [invalid, made[5], made[4], made[3], made[2], made[1], made[0]]

    seen, after = [], None
    with sessions() as s:
        for _ in range(4):
            page = list_deliveries(s, merchant="demo", after=after, limit=3)
            seen += ids(page)
            after = page.next_cursor
            if after is None:
                break
        assert seen == newest_first and after is None
        everyone = list_deliveries(s)
        assert len(everyone.rows) == 8 and everyone.next_cursor is None  # both merchants, no `done`
        assert ids(list_deliveries(s, statuses=["done"])) == [done]
        assert ids(list_deliveries(s, statuses=["done", "invalid"])) == [done, invalid]
        assert ids(list_deliveries(s, merchant="demo", statuses=["invalid"])) == [invalid]
        assert ids(list_deliveries(s, merchant="demo", since=T0 + timedelta(minutes=3))) == [invalid, *made[3:][::-1]]
        row = list_deliveries(s, merchant="demo", limit=1).rows[0]
    assert (row.status, row.attempts, row.last_error, row.replayable) == ("invalid", 0, '{"id": ["Missing"]}', False)
    assert row.received_at == T0 + timedelta(hours=1)
    assert set(row.as_json()) == {"id", "merchant", "status", "topic", "trigger", "loop_return_id",
                                  "attempts", "last_error", "received_at", "replayable"}  # never a body


def test_a_row_shows_no_body_and_no_email_and_says_whether_it_can_be_replayed(sessions):
    add_event(sessions, "a", "failed", T0, topic="return", trigger="return.created", loop_return_id="77",
              payload={"topic": "return", "ship_from": {"name": "Pat"}},
              last_error="Loop said: shopper pat@example.com " + "x" * 1000)
    with sessions() as s:
        (row,) = list_deliveries(s).rows
    assert row.replayable and (row.trigger, row.loop_return_id) == ("return.created", "77")
    assert row.last_error is not None and len(row.last_error) == 300
    assert "pat@example.com" not in row.last_error
    assert "Pat" not in str(row.as_json())


@pytest.mark.parametrize("cursor", ["", "not-a-cursor", "!!!", encode_cursor(T0, 1)[:-3]])
def test_a_malformed_cursor_is_a_value_error(sessions, cursor):
    with sessions() as s, pytest.raises(ValueError, match="not a cursor"):
        list_deliveries(s, after=cursor or "=")


def test_the_cursor_round_trips_and_bad_filters_are_refused(sessions):
    assert decode_cursor(encode_cursor(T0, 42)) == (T0, 42)
    assert "=" not in encode_cursor(T0, 42)
    with sessions() as s:
        with pytest.raises(ValueError, match="unknown status"):
            list_deliveries(s, statuses=["lost"])
        with pytest.raises(ValueError, match="limit"):
            list_deliveries(s, limit=0)
