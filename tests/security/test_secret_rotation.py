"""Webhook secrets rotate without downtime: add the new one, switch Loop over, remove the old.

Each step is a deploy with a new LOOP_WEBHOOK_SECRETS; during each, every secret listed is
accepted and no other, so no delivery signed with a secret still in use is ever refused.
"""
from __future__ import annotations

import pytest

from integration.loop.signature import sign
from integration.merchants import demo_merchant_config, parse_merchants
from tests.conftest import wire

EVENT = {"topic": "return", "trigger": "return.created", "id": "52393555", "state": "open"}
ALL = ["old-secret-1111", "new-secret-2222", "next-secret-3333"]


def receiver(monkeypatch, sessions, secrets_env: str):
    """The receiver as a deploy with this LOOP_WEBHOOK_SECRETS starts it."""
    from web import create_app

    monkeypatch.delenv("LOOP_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("LOOP_WEBHOOK_SECRETS", secrets_env)
    merchants = parse_merchants([demo_merchant_config()])
    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ADMIN_TOKEN": "test-admin"})
    return app.test_client()


def status(client, secret: str, n: int) -> int:
    """A new delivery (a new state each time, never a duplicate) signed with `secret`."""
    body = wire({**EVENT, "state": f"state-{n}"})
    return client.post("/webhooks/loop/demo", data=body, headers={
        "Content-Type": "application/json", "X-Loop-Signature": sign(secret, body)}).status_code


@pytest.mark.parametrize("step, secrets_env, accepted", [
    ("before", "old-secret-1111", {"old-secret-1111"}),
    ("new one added", "old-secret-1111,new-secret-2222", {"old-secret-1111", "new-secret-2222"}),
    ("three at once, spaces around", " old-secret-1111 , new-secret-2222,next-secret-3333 ", set(ALL)),
    ("old one removed", "new-secret-2222,next-secret-3333", {"new-secret-2222", "next-secret-3333"}),
    ("only the newest", "next-secret-3333", {"next-secret-3333"}),
])
def test_every_listed_secret_and_no_other_is_accepted(monkeypatch, sessions, step, secrets_env,
                                                      accepted):
    client = receiver(monkeypatch, sessions, secrets_env)
    got = {secret: status(client, secret, n) for n, secret in enumerate(ALL)}
    assert got == {secret: 202 if secret in accepted else 401 for secret in ALL}
