"""The webhook receiver: verify, store the raw body, enqueue after commit, answer with the right
status; and the worker's first step on the row: read it (invalid, ignored, duplicate or handled),
then keep no raw body."""
import hashlib
import json
import threading

from sqlalchemy import select, update
from sqlalchemy.orm import undefer

from integration.store.models import Return, WebhookEvent
from tests.conftest import wire

CREATED = {
    "topic": "return", "trigger": "return.created", "shop_id": 12345, "id": "52393555", "state": "open",
    "created_at": "2024-03-12T15:04:05Z", "edited_at": None, "order_name": "#1001",
    "customer": "jane@example.com",
    "address": {"name": "Jane Doe", "city": "Brooklyn", "state": "New York", "zip": 11201},
    "status_page_url": "https://example.loopreturns.com/#/return/b3e4764e",
    "line_items": [{"line_item_id": 293482039, "sku": "CB11D10-BLUE-S", "barcode": "099999000054",
                    "price": "88.00"}],
}

# Marked by its edit time: the same event in any bytes has one key (a body without a change
# marker is keyed by its bytes, integration.loop.webhooks.dedupe_key).
EDITED = {**CREATED, "trigger": "return.updated", "edited_at": "2024-03-13T09:00:00Z"}


def rows(sessions):
    with sessions() as s:
        return list(s.scalars(select(WebhookEvent).options(undefer(WebhookEvent.raw_body))
                              .order_by(WebhookEvent.id)))


def test_a_signed_delivery_is_stored_raw_then_enqueued_and_answered_202(post_webhook, sessions, enqueued):
    response = post_webhook(CREATED)
    assert response.status_code == 202
    stored = rows(sessions)
    assert len(stored) == 1 and stored[0].status == "received"
    assert response.get_json() == {"status": "accepted", "event_id": stored[0].id}
    # Nothing read in the request: the signed bytes, keyed by their hash, wait for a worker.
    assert stored[0].raw_body == wire(CREATED) and stored[0].payload is None
    assert stored[0].dedupe_key == stored[0].body_sha256 == hashlib.sha256(wire(CREATED)).hexdigest()
    assert (stored[0].topic, stored[0].event_key) == (None, None)
    assert enqueued == [stored[0].id]  # the id only, and only after the row exists


def test_the_worker_reads_the_body_and_keeps_neither_it_nor_the_email(post_webhook, sessions, handle_stored):
    post_webhook(CREATED)
    sent = handle_stored()
    [row] = rows(sessions)
    assert row.status == "done" and row.raw_body is None
    assert (row.topic, row.trigger, row.loop_return_id) == ("return", "return.created", "52393555")
    assert row.event_key and row.event_key != row.dedupe_key
    kept = json.dumps(row.payload)
    for pii in ("jane@example.com", "Jane Doe", "Brooklyn", "11201"):  # the address left with the row
        assert pii not in kept
    with sessions() as s:
        ret = s.scalar(select(Return))
    assert ret.ship_from["name"] == "Jane Doe"  # RLM's ship-from, on the return until its RA exists
    assert sent == [("create_rma", ret.id)]


def test_duplicate_delivery_answers_200_and_is_not_enqueued_again(post_webhook, sessions, enqueued):
    assert post_webhook(CREATED).status_code == 202
    assert post_webhook(CREATED).status_code == 200
    assert len(rows(sessions)) == 1 and len(enqueued) == 1


def test_the_same_event_in_other_bytes_is_handled_once(post_webhook, sessions, enqueued, handle_stored):
    """Loop's bytes and a re-serialisation of them (another key order, spaces, unescaped `/`):
    two deliveries for the receiver, one event for the worker."""
    other_bytes = json.dumps(dict(reversed(EDITED.items()))).encode()
    assert other_bytes != wire(EDITED)
    assert post_webhook(EDITED).status_code == 202
    assert post_webhook(None, raw=other_bytes).status_code == 202
    sent = handle_stored()
    first, second = rows(sessions)
    assert (first.status, second.status) == ("done", "duplicate")
    assert second.last_error == f"the same event as delivery {first.id}"
    assert (second.raw_body, second.payload, second.event_key) == (None, None, None)
    assert second.loop_return_id == "52393555"
    with sessions() as s:
        assert len(list(s.scalars(select(Return)))) == 1
    assert [step for step, _ in sent] == ["create_rma"]


def test_two_workers_on_two_copies_at_once_handle_the_event_once(post_webhook, sessions, handle_stored):
    """The first worker has taken its copy's event key but not committed yet: the second waits
    for it (PostgreSQL: the unique index; SQLite: the write lock), then finds the key taken."""
    from integration.loop.webhooks import dedupe_key, read_body

    post_webhook(EDITED)
    post_webhook(None, raw=json.dumps(EDITED).encode())
    first, second = rows(sessions)
    key = dedupe_key(read_body(first.raw_body), first.raw_body)
    engine = sessions.kw["bind"]
    with engine.connect() as conn:
        first_worker = conn.begin()
        conn.execute(update(WebhookEvent).where(WebhookEvent.id == first.id)
                     .values(status="processing", event_key=key))
        second_worker = threading.Thread(target=handle_stored, args=(second.id,))
        second_worker.start()
        second_worker.join(0.5)
        assert second_worker.is_alive()  # waiting for the first worker's transaction
        first_worker.commit()
    second_worker.join(30)
    assert not second_worker.is_alive()
    first, second = rows(sessions)
    assert (first.status, first.event_key) == ("processing", key)
    assert second.status == "duplicate" and second.last_error == f"the same event as delivery {first.id}"
    with sessions() as s:
        assert list(s.scalars(select(Return))) == []  # the second copy acted on nothing


def test_a_later_state_of_the_same_return_is_a_new_event(post_webhook, sessions, enqueued, handle_stored):
    post_webhook(CREATED)
    assert post_webhook({**CREATED, "trigger": "return.updated", "state": "cancelled"}).status_code == 202
    assert len(enqueued) == 2
    handle_stored()
    assert [r.status for r in rows(sessions)] == ["done", "done"]


def test_a_processing_failure_sent_twice_byte_for_byte_is_handled_twice(post_webhook, sessions, handle_stored):
    failed = {"topic": "return.processing", "trigger": "return.processing.failed", "return_id": 77,
              "return_state": "open", "message": "gateway timeout", "source": "api"}
    assert post_webhook(failed).status_code == 202
    assert post_webhook(failed).status_code == 202  # nothing tells a second failure from a re-delivery
    handle_stored()
    assert [r.status for r in rows(sessions)] == ["done", "done"]


def test_missing_or_wrong_signature_is_401_and_nothing_is_stored(client, post_webhook, sessions):
    body = wire(CREATED)
    assert client.post("/webhooks/loop/demo", data=body).status_code == 401
    assert post_webhook(CREATED, secret="not-the-secret").status_code == 401
    assert rows(sessions) == []


def test_old_secret_still_accepted_during_rotation(post_webhook):
    assert post_webhook(CREATED, secret="old-secret").status_code == 202


def test_signature_over_reserialised_json_is_refused(client, sessions):
    from integration.loop.signature import sign
    from tests.conftest import SECRET

    loop_bytes = wire(CREATED)
    other_bytes = json.dumps(CREATED).encode()  # what a naive re-serialisation would produce
    response = client.post("/webhooks/loop/demo", data=loop_bytes,
                           headers={"X-Loop-Signature": sign(SECRET, other_bytes)})
    assert response.status_code == 401


def test_a_signed_body_that_is_not_json_is_202_then_invalid_in_the_worker(post_webhook, sessions, enqueued,
                                                                          handle_stored):
    body = b'{"topic": "return", "customer": "jane@example.com", '
    assert post_webhook(None, raw=body).status_code == 202
    [row] = rows(sessions)
    assert enqueued == [row.id]
    assert handle_stored() == []
    [row] = rows(sessions)
    assert (row.status, row.last_error, row.raw_body, row.payload) == ("invalid", "body is not valid JSON", None, None)
    assert row.next_attempt_at is None  # finished: the sweeper leaves it alone


def test_an_unusable_event_is_202_then_invalid_and_listed_as_a_failed_delivery(post_webhook, sessions,
                                                                               handle_stored):
    from integration.ops.deliveries import list_deliveries

    response = post_webhook({"topic": "return", "trigger": "return.created", "customer": "jane@example.com"})
    assert response.status_code == 202  # no id: the receiver no longer reads the body
    handle_stored()
    [row] = rows(sessions)
    assert row.status == "invalid" and "id" in json.loads(row.last_error)
    assert (row.topic, row.raw_body, row.payload, row.event_key) == (None, None, None, None)
    with sessions() as s:
        [listed] = list_deliveries(s).rows  # the operators' failed-deliveries view
    assert (listed.id, listed.status, listed.replayable) == (row.id, "invalid", False)
    assert "jane@example.com" not in json.dumps(listed.as_json())


def test_body_over_the_cap_is_413(post_webhook, sessions):
    huge = {**CREATED, "padding": "x" * (70 * 1024)}
    assert post_webhook(huge).status_code == 413
    assert rows(sessions) == []


def test_topic_we_do_not_act_on_is_queued_then_ignored(post_webhook, sessions, enqueued, handle_stored):
    label = {"topic": "label", "trigger": "label.updated", "id": "12345", "label_status": "in_transit",
             "label_updated_at": "2019-04-01T12:00:00+00:00"}
    assert post_webhook(label).status_code == 202
    assert handle_stored() == []
    [row] = rows(sessions)
    assert (row.status, row.topic, row.raw_body) == ("ignored", "label", None)
    assert enqueued == [row.id]


def test_unknown_merchant_is_404(post_webhook):
    assert post_webhook(CREATED, merchant="nobody").status_code == 404


def test_broker_down_still_answers_202_and_keeps_the_row_for_the_sweeper(app, sessions):
    def broken(_id):
        raise ConnectionError("redis is down")

    app.config["ENQUEUE_EVENT"] = broken
    from integration.loop.signature import sign
    from tests.conftest import SECRET

    body = wire(CREATED)
    response = app.test_client().post("/webhooks/loop/demo", data=body,
                                      headers={"X-Loop-Signature": sign(SECRET, body)})
    assert response.status_code == 202
    assert rows(sessions)[0].status == "received"


def test_operator_api_needs_the_bearer_token(client):
    assert client.get("/api/returns/1").status_code == 401
    assert client.get("/api/returns/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/api/returns/1", headers={"Authorization": "Bearer test-admin"})
    assert response.status_code == 404


def test_no_log_line_carries_the_body_from_receipt_to_reading(post_webhook, sessions, handle_stored, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    post_webhook(CREATED)
    post_webhook(None, raw=wire(CREATED)[:-1])  # not JSON: invalid
    post_webhook({**CREATED, "id": ["x"]})  # not a usable event: invalid, with the field messages
    handle_stored()
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    for pii in ("jane@example.com", "Jane Doe", "Brooklyn", "11201"):
        assert pii not in logged
    assert [r.status for r in rows(sessions)] == ["done", "invalid", "invalid"]
    assert all(r.raw_body is None for r in rows(sessions))


def test_a_stored_row_whose_message_is_lost_is_re_driven_by_the_sweeper(post_webhook, sessions, merchants,
                                                                        handle_stored):
    from datetime import timedelta

    from integration.settings import load_settings
    from integration.store.models import utcnow
    from integration.workflow.context import Context
    from integration.workflow.sweeper import sweep

    post_webhook(CREATED)  # its relay message lost
    [row] = rows(sessions)
    sent: list = []
    settings = load_settings()
    ctx = Context(settings=settings, merchants=merchants, sessions=sessions,
                  enqueue=lambda step, target: sent.append((step, target)))
    assert sweep(ctx)["events"] == 0  # its lease is not over yet
    ctx.now = lambda: utcnow() + timedelta(seconds=settings.stuck_after_s + 1)
    assert sweep(ctx)["events"] == 1 and sent == [("handle_event", row.id)]
    handle_stored(row.id)
    assert rows(sessions)[0].status == "done"
