"""Bad input against the real receiver and the worker that reads what it stored: the production
body cap, a real database (SQLite and PostgreSQL), and one check that every row, once read, is
whole."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer

from integration.loop.signature import sign
from integration.loop.webhooks import HANDLED_TOPICS, KNOWN_TOPICS
from integration.settings import Settings
from integration.store.models import WebhookEvent
from tests.conftest import SECRET

CAP = Settings.__dataclass_fields__["webhook_max_bytes"].default  # what production runs with

# A complete return.created as Loop sends it (docs/loop-api.md §6), ids of mixed types on purpose.
CREATED = {
    "topic": "return", "trigger": "return.created", "shop_id": 12345, "id": "52393555", "state": "open",
    "created_at": "2024-03-12T15:04:05Z", "edited_at": None, "total": "176.00", "order_id": 2871,
    "order_name": "#1001", "provider_order_id": "5444175757553", "customer": "jane@example.com",
    "customer_detail": {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
    "address": {"name": "Jane Doe", "address1": "1 Main St", "city": "Brooklyn", "state": "New York",
                "zip": 11201, "country_code": "US"},
    "currency": "USD", "labels": [], "carrier": "", "tracking_number": "N/A", "label_status": "pending",
    "line_items": [
        {"line_item_id": 293482039, "provider_line_item_id": "23984238720340", "sku": "CB11D10-BLUE-S",
         "barcode": "099999000054", "title": "Cotton Blouse - Blue / S", "price": "88.00",
         "return_reason": "Too small", "parent_return_reason": "Didn't fit", "outcome": "default"},
        {"line_item_id": "293482040", "provider_line_item_id": "23984238720340", "sku": "CB11D10-BLUE-S",
         "barcode": "099999000054", "title": "Cotton Blouse - Blue / S", "price": "88.00",
         "return_reason": "Too small", "parent_return_reason": None, "outcome": "default"}],
}


@pytest.fixture
def app(sessions, merchants, enqueued):
    """The receiver as production configures it (1 MiB cap), with a recording enqueue."""
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": enqueued.append, "ADMIN_TOKEN": "test-admin"})
    assert app.config["MAX_CONTENT_LENGTH"] == CAP
    return app


SIGNED = object()  # sign the body with the merchant's current secret


def post(client, body: bytes, *, signature=SIGNED, content_type="application/json", merchant="demo"):
    headers = {}
    if signature is SIGNED:
        headers["X-Loop-Signature"] = sign(SECRET, body)
    elif signature is not None:
        headers["X-Loop-Signature"] = signature
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(f"/webhooks/loop/{merchant}", data=body, headers=headers)


def stored(sessions) -> list[WebhookEvent]:
    with sessions() as s:
        return list(s.scalars(select(WebhookEvent).options(undefer(WebhookEvent.raw_body))
                              .order_by(WebhookEvent.id)))


def assert_whole(row: WebhookEvent) -> None:
    """Nothing half-stored, once the worker has read the row (and then no raw body is left): an
    `invalid` row holds only the error; a `duplicate` what it was and the row it repeats; any
    other is a whole event."""
    assert len(row.body_sha256) == 64 and row.dedupe_key and row.merchant == "demo"
    assert row.raw_body is None and row.next_attempt_at is None
    if row.status == "invalid":
        assert (row.topic, row.trigger, row.loop_return_id, row.payload) == (None, None, None, None)
        assert row.last_error and row.event_key is None
        return
    assert row.trigger in KNOWN_TOPICS[row.topic] and row.loop_return_id
    if row.status == "duplicate":
        assert row.payload is None and row.event_key is None
        assert row.last_error.startswith("the same event as delivery ")
        return
    assert row.status == ("done" if row.topic in HANDLED_TOPICS else "ignored")
    assert row.event_key
    payload = row.payload
    assert (payload["topic"], payload["trigger"], payload["loop_return_id"]) == (
        row.topic, row.trigger, row.loop_return_id)
    assert "customer" not in payload and "address" not in payload  # PII never kept
    assert "ship_from" not in payload  # the address leaves with the finished row


def assert_all_whole(sessions) -> list[WebhookEvent]:
    rows = stored(sessions)
    for row in rows:
        assert_whole(row)
    return rows
