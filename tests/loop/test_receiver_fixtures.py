"""The receiver takes docs/loop-api.md's example payloads byte for byte, signed as Loop signs them (§5.2, §5.4, §6)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration.loop.signature import sign
from integration.store.models import WebhookEvent
from sandbox.loop.webhooks import encode
from tests.conftest import SECRET

FIXTURES = Path(__file__).parent.parent / "fixtures" / "loop"
EXPECTED_STATUS = {  # what the worker makes of each (the receiver accepts them all unread)
    "return__created.json": "done", "return__updated.json": "done",
    "return_processing__failed.json": "done", "label__updated.json": "ignored",
    "restock__requested.json": "ignored",
}


@pytest.fixture(params=sorted(EXPECTED_STATUS))
def fixture(request) -> tuple[str, bytes]:
    return request.param, (FIXTURES / request.param).read_bytes()


def test_fixtures_are_loops_wire_form_as_the_sandbox_sends_it(fixture):
    name, raw = fixture
    assert encode(json.loads(raw)) == raw  # compact JSON, `/` escaped as `\/`, no trailing newline


def test_fixture_bytes_signed_as_loop_signs_them_are_accepted(fixture, post_webhook, sessions, handle_stored):
    name, raw = fixture
    response = post_webhook(None, raw=raw)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "accepted"
    handle_stored()
    with sessions() as s:
        assert s.get(WebhookEvent, response.get_json()["event_id"]).status == EXPECTED_STATUS[name]


def test_the_same_payload_re_serialised_fails_the_signature(fixture, post_webhook):
    name, raw = fixture
    reserialised = json.dumps(json.loads(raw)).encode()  # what a framework's JSON round trip would give
    assert reserialised != raw
    response = post_webhook(None, raw=reserialised, headers={"X-Loop-Signature": sign(SECRET, raw)})
    assert response.status_code == 401


def test_escaped_slashes_are_part_of_what_is_signed(post_webhook):
    raw = (FIXTURES / "return__updated.json").read_bytes()
    unescaped = raw.replace(b"\\/", b"/")
    assert json.loads(unescaped) == json.loads(raw)  # the same JSON value...
    response = post_webhook(None, raw=unescaped, headers={"X-Loop-Signature": sign(SECRET, raw)})
    assert response.status_code == 401  # ...but not the bytes Loop signed
