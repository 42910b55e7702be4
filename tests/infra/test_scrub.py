"""The error-report scrubber, on Sentry-shaped events: no shopper data, no secret survives."""
from __future__ import annotations

import json

from integration.infra.scrub import FILTERED, scrub_event, scrub_text, secrets_of

SECRETS = secrets_of("loop-key-9f8e7d", "whsec-1a2b3c", "admin-token-77", None,
                     urls=["postgresql+psycopg://app:db-pass-42@db.example.com/app",
                           "rediss://:redis-pass-13@redis.example.com:6380", None])


def event() -> dict:
    """What the SDK builds for an exception in a webhook request, with data in every corner."""
    return {
        "event_id": "abc", "level": "error", "platform": "python",
        "sdk": {"name": "sentry.python.flask", "version": "2.0"},
        "user": {"ip_address": "203.0.113.9", "email": "jane@example.com"},
        "request": {
            "url": "https://svc.example.com/webhooks/loop/demo", "method": "POST",
            "query_string": "email=jane@example.com",
            "headers": {"Authorization": "Bearer admin-token-77", "X-Authorization": "loop-key-9f8e7d",
                        "X-Loop-Signature": "c2lnbmF0dXJl", "Content-Type": "application/json",
                        "Cookie": "session=abc"},
            "cookies": {"session": "abc"},
            "data": {"customer": "jane@example.com", "address": {"name": "Jane Doe", "city": "Brooklyn"}},
        },
        "exception": {"values": [{
            "type": "FinalError",
            "value": "loop: refused key loop-key-9f8e7d for jane@example.com at "
                     "rediss://:redis-pass-13@redis.example.com:6380",
            "stacktrace": {"frames": [{"function": "create_rma", "module": "integration.workflow.pipeline",
                                       "lineno": 10, "vars": {"address": "'Jane Doe'", "self": "<Client>"}}]},
        }]},
        "breadcrumbs": {"values": [
            {"category": "requests", "message": "GET https://rlm.example.com with Basic ZGVtbzpybG0ta2V5"},
            {"category": "log", "message": "connected to postgresql+psycopg://app:db-pass-42@db.example.com/app"},
        ]},
        "extra": {"payload": {"ship_from": {"name": "Jane Doe", "zip": "11201"}, "loop_return_id": "77"},
                  "webhook_secrets": ["whsec-1a2b3c"], "note": "secret whsec-1a2b3c in a message"},
        "contexts": {"runtime": {"version": "3.11"}},
        "tags": {"merchant": "demo"},
    }


def test_nothing_of_the_shopper_or_a_secret_survives():
    text = json.dumps(scrub_event(event(), None, secrets=SECRETS))
    for leak in ("jane@example.com", "Jane Doe", "Brooklyn", "11201", "203.0.113.9", "loop-key-9f8e7d",
                 "whsec-1a2b3c", "admin-token-77", "db-pass-42", "redis-pass-13", "c2lnbmF0dXJl",
                 "ZGVtbzpybG0ta2V5", "session=abc"):
        assert leak not in text, leak


def test_what_helps_to_debug_is_kept():
    scrubbed = scrub_event(event(), None, secrets=SECRETS)
    exception = scrubbed["exception"]["values"][0]
    assert exception["type"] == "FinalError" and exception["value"].startswith("loop: refused key [Filtered]")
    frame = exception["stacktrace"]["frames"][0]
    assert frame == {"function": "create_rma", "module": "integration.workflow.pipeline", "lineno": 10}  # no vars
    assert scrubbed["request"]["url"] == "https://svc.example.com/webhooks/loop/demo"
    assert scrubbed["request"]["headers"]["Content-Type"] == "application/json"
    assert scrubbed["request"]["headers"]["Authorization"] == FILTERED
    assert scrubbed["request"]["data"] == FILTERED and "user" not in scrubbed
    assert scrubbed["extra"]["payload"] == {"ship_from": FILTERED, "loop_return_id": "77"}
    assert scrubbed["sdk"] == {"name": "sentry.python.flask", "version": "2.0"}
    assert scrubbed["tags"] == {"merchant": "demo"} and scrubbed["level"] == "error"


def test_headers_as_name_value_pairs_are_judged_by_name():
    scrubbed = scrub_event({"request": {"headers": [["X-Authorization", "k"], ["Accept", "json"]]}})
    assert scrubbed["request"]["headers"] == [["X-Authorization", FILTERED], ["Accept", "json"]]


def test_strings_lose_emails_credentials_and_url_passwords():
    assert scrub_text("mail jane.doe+1@mail.example.co.uk now") == "mail [email] now"
    assert scrub_text("Authorization: Basic ZGVtbzprZXk=") == "Authorization: Basic [Filtered]"
    assert scrub_text("redis://user:pw@host:6379/0") == "redis://user:[Filtered]@host:6379/0"
    assert scrub_text("key is loop-key-9f8e7d.", SECRETS) == "key is [Filtered]."


def test_short_values_are_not_taken_for_secrets():
    assert secrets_of("abc", "", None, "long-enough") == frozenset({"long-enough"})
