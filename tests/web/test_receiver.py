"""The webhook receiver: verify, store, enqueue after commit, answer with the right status."""
import json

from sqlalchemy import select

from integration.store.models import WebhookEvent
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


def rows(sessions):
    with sessions() as s:
        return list(s.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def test_valid_event_is_stored_then_enqueued_and_answered_202(post_webhook, sessions, enqueued):
    response = post_webhook(CREATED)
    assert response.status_code == 202
    stored = rows(sessions)
    assert len(stored) == 1 and stored[0].status == "received"
    assert stored[0].loop_return_id == "52393555" and stored[0].trigger == "return.created"
    assert enqueued == [stored[0].id]  # the id only, and only after the row exists


def test_stored_event_holds_no_email_and_only_the_ship_from_address(post_webhook, sessions):
    post_webhook(CREATED)
    payload = rows(sessions)[0].payload
    assert "jane@example.com" not in json.dumps(payload)
    rest = {k: v for k, v in payload.items() if k != "ship_from"}
    for pii in ("Jane Doe", "Brooklyn", "11201"):
        assert pii not in json.dumps(rest)


def test_duplicate_delivery_answers_200_and_is_not_enqueued_again(post_webhook, sessions, enqueued):
    assert post_webhook(CREATED).status_code == 202
    assert post_webhook(CREATED).status_code == 200
    assert len(rows(sessions)) == 1 and len(enqueued) == 1


def test_a_later_state_of_the_same_return_is_a_new_event(post_webhook, enqueued):
    post_webhook(CREATED)
    assert post_webhook({**CREATED, "trigger": "return.updated", "state": "cancelled"}).status_code == 202
    assert len(enqueued) == 2


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


def test_unparseable_json_is_400(post_webhook, sessions):
    assert post_webhook(None, raw=b'{"topic": "return", ').status_code == 400
    assert rows(sessions) == []


def test_unusable_event_is_422_and_kept_for_inspection(post_webhook, sessions, enqueued):
    response = post_webhook({"topic": "return", "trigger": "return.created"})  # no id
    assert response.status_code == 422
    assert "id" in response.get_json()["fields"]
    stored = rows(sessions)
    assert len(stored) == 1 and stored[0].status == "invalid" and enqueued == []


def test_body_over_the_cap_is_413(post_webhook, sessions):
    huge = {**CREATED, "padding": "x" * (70 * 1024)}
    assert post_webhook(huge).status_code == 413
    assert rows(sessions) == []


def test_topic_we_do_not_act_on_is_stored_as_ignored(post_webhook, sessions, enqueued):
    label = {"topic": "label", "trigger": "label.updated", "id": "12345", "label_status": "in_transit",
             "label_updated_at": "2019-04-01T12:00:00+00:00"}
    assert post_webhook(label).status_code == 202
    assert rows(sessions)[0].status == "ignored" and enqueued == []


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
