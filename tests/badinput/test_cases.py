"""Each kind of bad delivery gets its defined status, and the database shows exactly that once
the worker has read what the receiver stored.

README "Receiver answers": a signed body is stored and queued, 202, whatever it holds; the same
bytes again 200; missing or bad signature 401; over the cap 413; unknown merchant 404. The worker
then reads it: not JSON, or JSON that is not a usable Loop event, `invalid`; label/restock
`ignored`; the rest handled (`done`). Any Content-Type is judged by its signed body alone (the
signature covers the bytes; Loop sends application/json).
"""
from __future__ import annotations

import copy
import hmac
import json

import pytest

from integration.loop.signature import sign
from tests.conftest import SECRET, wire

from .conftest import CAP, CREATED, SIGNED, assert_all_whole, post, stored


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


def check(response, sessions, enqueued, handle, status: int, rows: list[str]) -> None:
    """The answer, then the rows once the worker has read every new one (handle_stored)."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    handle()
    stored = assert_all_whole(sessions)
    assert [r.status for r in stored] == rows
    assert enqueued == [r.id for r in stored]  # every stored delivery goes to a worker
    # No status answer echoes what the shopper sent.
    assert "jane@example.com" not in response.get_data(as_text=True)


# --- not JSON: 202, then invalid ---------------------------------------------------------------------------
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
def test_a_body_that_is_not_json_is_202_then_invalid_in_the_worker(client, sessions, enqueued, handle_stored,
                                                                   body):
    check(post(client, body), sessions, enqueued, handle_stored, 202, ["invalid"])
    assert stored(sessions)[0].last_error == "body is not valid JSON"


# --- JSON, but not a usable Loop event: 202, then invalid ---------------------------------------------------
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
def test_json_that_is_not_a_usable_event_is_202_then_kept_once_as_invalid(client, sessions, enqueued,
                                                                          handle_stored, payload):
    body = wire(payload)
    check(post(client, body), sessions, enqueued, handle_stored, 202, ["invalid"])
    json.loads(stored(sessions)[0].last_error)  # the field messages, as JSON
    # Sent again (Loop does not retry a 2xx, but a person might): still one row; but a body that
    # names the processing topic is always stored (README: a processing failure is never a duplicate).
    if b'"return.processing' in body:
        check(post(client, body), sessions, enqueued, handle_stored, 202, ["invalid", "invalid"])
    else:
        check(post(client, body), sessions, enqueued, handle_stored, 200, ["invalid"])


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
def test_a_missing_or_bad_signature_is_401_and_nothing_is_stored(client, sessions, enqueued, handle_stored,
                                                                 signature):
    response = post(client, BODY, signature=signature)
    check(response, sessions, enqueued, handle_stored, 401, [])
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize("body", [b"not json", b"[]", b""], ids=["not json", "unusable", "empty"])
def test_the_signature_is_checked_before_anything_is_parsed(client, sessions, enqueued, handle_stored, body):
    check(post(client, body, signature=None), sessions, enqueued, handle_stored, 401, [])


# --- 202: accepted -----------------------------------------------------------------------------
CONTENT_TYPES = [None, "application/json; charset=utf-8", "text/plain", "application/octet-stream",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/xml"]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_any_content_type_is_judged_by_its_signed_body(client, sessions, enqueued, handle_stored, content_type):
    """Loop always sends application/json; the signature covers the bytes, so they decide."""
    check(post(client, BODY, content_type=content_type), sessions, enqueued, handle_stored, 202, ["done"])
    check(post(client, b"{not json", content_type=content_type), sessions, enqueued, handle_stored, 202,
          ["done", "invalid"])


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
def test_unicode_and_very_long_strings_are_stored_whole(client, sessions, enqueued, handle_stored, name):
    body = wire(UNICODE[name]) if UNICODE[name] else wire(CREATED)[:-1] + b',"id":"52393556"}'
    assert len(body) <= CAP
    check(post(client, body), sessions, enqueued, handle_stored, 202, ["done"])


def test_non_ascii_sent_raw_or_escaped_is_the_same_text(client, sessions, handle_stored):
    raw = json.dumps(changed("line_items.0.title", "Blusa ñ"), ensure_ascii=False).encode()
    assert post(client, raw).status_code == 202
    handle_stored()
    payload = assert_all_whole(sessions)[0].payload
    assert payload["line_items"][0]["title"] == "Blusa ñ"


def test_text_a_database_cannot_hold_is_replaced_not_refused(client, sessions, handle_stored):
    """NUL and lone surrogates cannot be stored in PostgreSQL (or encoded as UTF-8): they become
    U+FFFD in stored text, so one odd character never loses a return."""
    post(client, wire(changed("line_items.0.title", "a\u0000b\ud800c")))
    handle_stored()
    assert assert_all_whole(sessions)[0].payload["line_items"][0]["title"] == "a\ufffdb\ufffdc"


# --- 202 then ignored, 200 duplicate ----------------------------------------------------------------
IGNORED = {
    "label": {"topic": "label", "trigger": "label.updated", "id": "12345", "label_status": "in_transit",
              "label_updated_at": "2019-04-01T12:00:00+00:00"},
    "restock": {"topic": "restock", "trigger": "restock.requested", "id": 12345,
                "restock_items": [{"location_id": 10123456789, "available_adjustment": 1}]},
}


@pytest.mark.parametrize("payload", IGNORED.values(), ids=IGNORED.keys())
def test_topics_we_do_not_act_on_are_read_as_ignored(client, sessions, enqueued, handle_stored,
                                                                       payload):
    check(post(client, wire(payload)), sessions, enqueued, handle_stored, 202, ["ignored"])
    check(post(client, wire(payload)), sessions, enqueued, handle_stored, 200, ["ignored"])


def test_a_duplicate_with_another_content_type_is_still_a_duplicate(client, sessions, enqueued, handle_stored):
    check(post(client, BODY), sessions, enqueued, handle_stored, 202, ["done"])
    check(post(client, BODY, content_type="text/plain"), sessions, enqueued, handle_stored, 200, ["done"])


# --- 413: over the cap -------------------------------------------------------------------------
def padded(size: int) -> bytes:
    """A valid event of exactly `size` bytes."""
    base = wire(changed("padding", ""))
    return base.replace(b'"padding":""', b'"padding":"' + b"x" * (size - len(base)) + b'"')


def test_a_body_exactly_at_the_cap_is_accepted(client, sessions, enqueued, handle_stored):
    body = padded(CAP)
    assert len(body) == CAP
    check(post(client, body), sessions, enqueued, handle_stored, 202, ["done"])


@pytest.mark.parametrize("signature", [SIGNED, None, "bad"], ids=["signed", "unsigned", "bad signature"])
@pytest.mark.parametrize("size", [CAP + 1, 5 * CAP], ids=["one byte over", "five times"])
def test_a_body_over_the_cap_is_413_and_nothing_is_stored(client, sessions, enqueued, handle_stored, size,
                                                          signature):
    check(post(client, padded(size), signature=signature), sessions, enqueued, handle_stored, 413, [])


# --- 404: unknown merchant ---------------------------------------------------------------------
@pytest.mark.parametrize("merchant", ["nobody", "DEMO", "demo%20", "d%C3%A9mo", "x" * 300])
def test_an_unknown_merchant_is_404_and_nothing_is_stored(client, sessions, enqueued, handle_stored, merchant):
    check(post(client, BODY, merchant=merchant), sessions, enqueued, handle_stored, 404, [])


def test_an_unknown_merchant_is_404_whatever_the_body(client, sessions, enqueued, handle_stored):
    check(post(client, padded(2 * CAP), merchant="nobody"), sessions, enqueued, handle_stored, 404, [])
