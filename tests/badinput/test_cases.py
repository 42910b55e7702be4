"""Each kind of bad delivery gets its defined status, and the database shows exactly that.

README "Receiver answers": stored and queued 202; duplicate 200; label/restock 202 stored as
`ignored`; missing or bad signature 401; not JSON 400; JSON that is not a usable Loop event 422
stored as `invalid`; over the cap 413; unknown merchant 404. Any Content-Type is judged by its
signed body alone (the signature covers the bytes; Loop sends application/json).
"""
from __future__ import annotations

import copy
import hmac
import json

import pytest

from integration.loop.signature import sign
from tests.conftest import SECRET, wire

from .conftest import CAP, CREATED, SIGNED, assert_all_whole, post


def _at(event: dict, path: str):
    """(container, key) of a dotted path such as "line_items.0.sku"."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for key in parents:
        event = event[key]
    return event, last


def changed(path: str, value) -> dict:
    """CREATED with one field set to `value`."""
    event = copy.deepcopy(CREATED)
    parent, key = _at(event, path)
    parent[key] = value
    return event


def dropped(path: str) -> dict:
    event = copy.deepcopy(CREATED)
    parent, key = _at(event, path)
    del parent[key]
    return event


def check(response, sessions, enqueued, status: int, rows: list[str]) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    stored = assert_all_whole(sessions)
    assert [r.status for r in stored] == rows
    assert enqueued == [r.id for r in stored if r.status == "received"]
    # No status answer echoes what the shopper sent.
    assert "jane@example.com" not in response.get_data(as_text=True)


# --- 400: not JSON ---------------------------------------------------------------------------
NOT_JSON = {
    "empty": b"",
    "truncated": wire(CREATED)[:-1],
    "trailing garbage": wire(CREATED) + b"x",
    "two objects": wire(CREATED) + wire(CREATED),
    "single quotes": b"{'topic': 'return'}",
    "bare word": b"return.created",
    "not utf-8": b'{"topic":"return","id":"\xff\xfe"}',
    "NaN is not JSON": b'{"topic":"return","trigger":"return.created","id":"1","total":NaN}',
    "Infinity is not JSON": b'{"topic":"return","trigger":"return.created","id":"1","total":-Infinity}',
    "nested deeper than any parser": b"[" * 200_000 + b"]" * 200_000,
    "form encoded": b"topic=return&trigger=return.created&id=1",
}


@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_json_is_400_and_nothing_is_stored(client, sessions, enqueued, body):
    check(post(client, body), sessions, enqueued, 400, [])


# --- 422: JSON, but not a usable Loop event ---------------------------------------------------
UNUSABLE = {
    "an array": [CREATED],
    "a string": "return.created",
    "a number": 52393555,
    "null": None,
    "an empty object": {},
    "no topic": dropped("topic"),
    "no trigger": dropped("trigger"),
    "no id": dropped("id"),
    "unknown topic": changed("topic", "giftcard"),
    "topic in another case": changed("topic", "RETURN"),
    "topic not a string": changed("topic", 5),
    "topic null": changed("topic", None),
    "unknown trigger": changed("trigger", "return.deleted"),
    "trigger of another topic": changed("trigger", "label.created"),
    "trigger not a string": changed("trigger", ["return.created"]),
    "id a float": changed("id", 52393555.5),
    "id a boolean": changed("id", True),
    "id a list": changed("id", ["52393555"]),
    "id an object": changed("id", {"id": 1}),
    "id empty": changed("id", ""),
    "id blank": changed("id", "   "),
    "id too long": changed("id", "9" * 33),
    "id null": changed("id", None),
    "id with a NUL": changed("id", "5239\u00003555"),
    "id with a lone surrogate": changed("id", "5239\ud8003555"),
    "id with a newline": changed("id", "5239\n3555"),
    "state a number": changed("state", 3),
    "edited_at a number": changed("edited_at", 1710255845),
    "created_at a list": changed("created_at", ["2024-03-12"]),
    "total an object": changed("total", {"amount": "1.00"}),
    "line_items an object": changed("line_items", {"0": CREATED["line_items"][0]}),
    "line_items of strings": changed("line_items", ["CB11D10-BLUE-S"]),
    "line item without its id": dropped("line_items.0.line_item_id"),
    "line item id null": changed("line_items.1.line_item_id", None),
    "line item sku a number": changed("line_items.0.sku", 12345),
    "line item price a list": changed("line_items.0.price", ["88.00"]),
    "address a string": changed("address", "1 Main St, Brooklyn"),
    "address state a number": changed("address.state", 36),
    "address name an object": changed("address.name", {"first": "Jane"}),
    "address zip a list": changed("address.zip", [11201]),
    "processing event without return_id": {"topic": "return.processing",
                                           "trigger": "return.processing.failed", "id": "1"},
    "processing event return_id blank": {"topic": "return.processing",
                                         "trigger": "return.processing.failed", "return_id": " "},
}


@pytest.mark.parametrize("payload", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_json_that_is_not_a_usable_event_is_422_and_kept_once_as_invalid(client, sessions, enqueued,
                                                                         payload):
    body = wire(payload)
    response = post(client, body)
    check(response, sessions, enqueued, 422, ["invalid"])
    assert response.get_json()["error"] == "not a usable Loop event"
    # Sent again (Loop does not retry a 422, but a person might): still one row.
    check(post(client, body), sessions, enqueued, 422, ["invalid"])


# --- 401: missing or bad signature ------------------------------------------------------------
BODY = wire(CREATED)
BAD_SIGNATURES = {
    "missing": None,
    "empty": "",
    "whitespace": "   ",
    "another secret": sign("not-the-secret", BODY),
    "another body": sign(SECRET, wire({**CREATED, "id": "1"})),
    "over re-serialised JSON": sign(SECRET, json.dumps(CREATED).encode()),
    "over unescaped slashes": sign(SECRET, json.dumps(CREATED, separators=(",", ":")).encode()),
    "hex instead of base64": hmac.new(SECRET.encode(), BODY, "sha256").hexdigest(),
    "truncated": sign(SECRET, BODY)[:-4],
    "with a prefix": "sha256=" + sign(SECRET, BODY),
    "the secret itself": SECRET,
    "not ascii": "é" * 44,
    "very long": "A" * 10_000,
}


@pytest.mark.parametrize("signature", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_a_missing_or_bad_signature_is_401_and_nothing_is_stored(client, sessions, enqueued, signature):
    response = post(client, BODY, signature=signature)
    check(response, sessions, enqueued, 401, [])
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize("body", [b"not json", b"[]", b""], ids=["not json", "unusable", "empty"])
def test_the_signature_is_checked_before_anything_is_parsed(client, sessions, enqueued, body):
    check(post(client, body, signature=None), sessions, enqueued, 401, [])


# --- 202: accepted -----------------------------------------------------------------------------
CONTENT_TYPES = [None, "application/json; charset=utf-8", "text/plain", "application/octet-stream",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/xml"]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_any_content_type_is_judged_by_its_signed_body(client, sessions, enqueued, content_type):
    """Loop always sends application/json; the signature covers the bytes, so they decide."""
    check(post(client, BODY, content_type=content_type), sessions, enqueued, 202, ["received"])
    check(post(client, b"{not json", content_type=content_type), sessions, enqueued, 400, ["received"])


UNICODE = {
    "emoji and CJK": changed("line_items.0.title", "Blouse 👚 ブラウス 上衣"),
    "right to left": changed("line_items.0.title", "بلوزة قطنية"),
    "combining marks": changed("line_items.0.return_reason", "Zu kle\u0308in"),
    "id in other digits": changed("id", "٥٢٣٩٣٥٥٥"),
    "escaped non-ascii": changed("order_name", "#１００１"),
    "address in another script": changed("address.name", "Жанна Доу"),
    "a 100k-character title": changed("line_items.0.title", "ü" * 100_000),
    "a 100k-character state": changed("state", "o" * 100_000),
    "a 100k-character note field Loop added": changed("status_page_url", "x" * 100_000),
    "a NUL in a title": changed("line_items.0.title", "Blouse\u0000S"),
    "a lone surrogate in a title": changed("line_items.0.title", "Blouse \udc00"),
    "unknown fields everywhere": changed("line_items.0.future_field", {"deep": [1, {"x": None}]}),
    "duplicate keys": None,  # built below: raw JSON with `id` twice
}


@pytest.mark.parametrize("name", UNICODE.keys())
def test_unicode_and_very_long_strings_are_stored_whole(client, sessions, enqueued, name):
    body = wire(UNICODE[name]) if UNICODE[name] else wire(CREATED)[:-1] + b',"id":"52393556"}'
    assert len(body) <= CAP
    check(post(client, body), sessions, enqueued, 202, ["received"])


def test_non_ascii_sent_raw_or_escaped_is_the_same_text(client, sessions):
    raw = json.dumps(changed("line_items.0.title", "Blusa ñ"), ensure_ascii=False).encode()
    assert post(client, raw).status_code == 202
    payload = assert_all_whole(sessions)[0].payload
    assert payload["line_items"][0]["title"] == "Blusa ñ"


def test_text_a_database_cannot_hold_is_replaced_not_refused(client, sessions):
    """NUL and lone surrogates cannot be stored in PostgreSQL (or encoded as UTF-8): they become
    U+FFFD in stored text, so one odd character never loses a return."""
    post(client, wire(changed("line_items.0.title", "a\u0000b\ud800c")))
    assert assert_all_whole(sessions)[0].payload["line_items"][0]["title"] == "a\ufffdb\ufffdc"


# --- 202 ignored, 200 duplicate ----------------------------------------------------------------
IGNORED = {
    "label": {"topic": "label", "trigger": "label.updated", "id": "12345", "label_status": "in_transit",
              "label_updated_at": "2019-04-01T12:00:00+00:00"},
    "restock": {"topic": "restock", "trigger": "restock.requested", "id": 12345,
                "restock_items": [{"location_id": 10123456789, "available_adjustment": 1}]},
}


@pytest.mark.parametrize("payload", IGNORED.values(), ids=IGNORED.keys())
def test_topics_we_do_not_act_on_are_stored_as_ignored_and_not_queued(client, sessions, enqueued,
                                                                       payload):
    check(post(client, wire(payload)), sessions, enqueued, 202, ["ignored"])
    check(post(client, wire(payload)), sessions, enqueued, 200, ["ignored"])


def test_a_duplicate_with_another_content_type_is_still_a_duplicate(client, sessions, enqueued):
    check(post(client, BODY), sessions, enqueued, 202, ["received"])
    check(post(client, BODY, content_type="text/plain"), sessions, enqueued, 200, ["received"])


# --- 413: over the cap -------------------------------------------------------------------------
def padded(size: int) -> bytes:
    """A valid event of exactly `size` bytes."""
    base = wire(changed("padding", ""))
    return base.replace(b'"padding":""', b'"padding":"' + b"x" * (size - len(base)) + b'"')


def test_a_body_exactly_at_the_cap_is_accepted(client, sessions, enqueued):
    body = padded(CAP)
    assert len(body) == CAP
    check(post(client, body), sessions, enqueued, 202, ["received"])


@pytest.mark.parametrize("signature", [SIGNED, None, "bad"], ids=["signed", "unsigned", "bad signature"])
@pytest.mark.parametrize("size", [CAP + 1, 5 * CAP], ids=["one byte over", "five times"])
def test_a_body_over_the_cap_is_413_and_nothing_is_stored(client, sessions, enqueued, size, signature):
    check(post(client, padded(size), signature=signature), sessions, enqueued, 413, [])


# --- 404: unknown merchant ---------------------------------------------------------------------
@pytest.mark.parametrize("merchant", ["nobody", "DEMO", "demo%20", "d%C3%A9mo", "x" * 300])
def test_an_unknown_merchant_is_404_and_nothing_is_stored(client, sessions, enqueued, merchant):
    check(post(client, BODY, merchant=merchant), sessions, enqueued, 404, [])


def test_an_unknown_merchant_is_404_whatever_the_body(client, sessions, enqueued):
    check(post(client, padded(2 * CAP), merchant="nobody"), sessions, enqueued, 404, [])
