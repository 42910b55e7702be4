import pytest
from marshmallow import ValidationError

from integration.loop.webhooks import dedupe_key, parse_event

CREATED = {
    "topic": "return", "trigger": "return.created", "shop_id": 12345, "id": "52393555",
    "state": "open", "created_at": "2024-03-12T15:04:05Z", "edited_at": None,
    "customer": "jane@example.com", "address": {"name": "Jane Doe", "zip": 11201},
    "line_items": [
        {"line_item_id": 293482039, "sku": "CB11D10-BLUE-S", "barcode": "099999000054", "price": "88.00"},
        {"line_item_id": "293482040", "sku": "CB11D10-BLUE-S", "barcode": "099999000054", "price": "88.00"},
    ],
    "some_field_loop_added_last_week": {"x": 1},
}


def test_ids_that_arrive_as_numbers_or_strings_become_strings():
    event = parse_event(CREATED)
    assert event["loop_return_id"] == "52393555"
    assert [u["line_item_id"] for u in event["line_items"]] == ["293482039", "293482040"]
    event = parse_event({**CREATED, "id": 52393555})
    assert event["loop_return_id"] == "52393555"


def test_only_the_ship_from_address_rlm_needs_is_kept_and_only_from_the_creation():
    event = parse_event(CREATED)
    assert "jane@example.com" not in repr(event)  # no email, ever
    assert event["ship_from"] == {"name": "Jane Doe", "zip": "11201"}
    assert "some_field_loop_added_last_week" not in event
    updated = parse_event({**CREATED, "trigger": "return.updated"})
    assert "ship_from" not in updated and "Jane Doe" not in repr(updated)


def test_processing_failed_is_keyed_by_return_id():
    event = parse_event({"topic": "return.processing", "trigger": "return.processing.failed",
                         "return_id": 52393555, "return_state": "open", "message": None,
                         "source": "warehouse"})
    assert event["loop_return_id"] == "52393555"


@pytest.mark.parametrize("payload, field", [
    ({**CREATED, "topic": "giraffe"}, "topic"),
    ({**CREATED, "trigger": "return.exploded"}, "trigger"),
    ({k: v for k, v in CREATED.items() if k != "id"}, "id"),
    ({**CREATED, "id": True}, "id"),
    ({**CREATED, "id": {"nested": 1}}, "id"),
    ({"topic": "return.processing", "trigger": "return.processing.failed"}, "return_id"),
])
def test_unusable_events_name_the_field(payload, field):
    with pytest.raises(ValidationError) as info:
        parse_event(payload)
    assert field in info.value.messages


def test_a_non_object_body_is_unusable():
    with pytest.raises(ValidationError):
        parse_event(["not", "an", "object"])


def test_same_event_same_key_and_a_state_change_is_a_new_event():
    raw = b"{}"
    first = dedupe_key(parse_event(CREATED), raw)
    assert dedupe_key(parse_event(CREATED), raw) == first
    updated = parse_event({**CREATED, "trigger": "return.updated", "state": "cancelled"})
    assert dedupe_key(updated, raw) != first
