import base64
import hashlib
import hmac
import json

from integration.loop.signature import sign, verify

# The byte-exact wire form from docs/loop-api.md §6 (escaped slashes, compact separators).
WIRE = (b'{"topic":"return","trigger":"return.updated","shop_id":12345,"id":"52393555","state":"closed",'
        b'"status_page_url":"https:\\/\\/example.loopreturns.com\\/#\\/return\\/b3e4764e"}')


def test_signature_is_base64_hmac_sha256_of_the_raw_bytes():
    expected = base64.b64encode(hmac.new(b"s3cret", WIRE, hashlib.sha256).digest()).decode()
    assert sign("s3cret", WIRE) == expected
    assert verify(["s3cret"], WIRE, expected)


def test_re_serialised_json_does_not_verify():
    signature = sign("s3cret", WIRE)
    reserialised = json.dumps(json.loads(WIRE)).encode()  # unescapes the slashes, adds spaces
    assert reserialised != WIRE
    assert not verify(["s3cret"], reserialised, signature)


def test_any_configured_secret_verifies_so_secrets_can_rotate():
    signature = sign("new-secret", WIRE)
    assert verify(["old-secret", "new-secret"], WIRE, signature)
    assert not verify(["old-secret"], WIRE, signature)


def test_missing_or_garbage_signature_is_rejected():
    assert not verify(["s3cret"], WIRE, None)
    assert not verify(["s3cret"], WIRE, "")
    assert not verify(["s3cret"], WIRE, "not-base64-at-all")
    assert not verify([], WIRE, sign("s3cret", WIRE))
