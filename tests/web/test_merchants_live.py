"""Merchants from the database reach a running web app and the workers' periodic jobs without a
restart; a disabled merchant gets 404 and no periodic job."""
from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet

from integration.loop.signature import sign
from integration.settings import load_settings
from integration.store import merchant_store as store
from tests.conftest import wire
from tests.store.test_merchant_store import HOOK, config
from tests.web.test_receiver import CREATED


def live_merchants(database_url, keys):
    return store.Refreshing(lambda: store.signature(database_url),
                            lambda: store.in_effect(database_url, keys), refresh_s=0)


def test_a_disabled_merchant_gets_404_without_a_restart(sessions, database_url, monkeypatch):
    from web import create_app
    from workers import runtime

    monkeypatch.delenv("MERCHANTS_FILE", raising=False)
    monkeypatch.delenv("MERCHANTS_TOML", raising=False)
    keys = MultiFernet([Fernet(Fernet.generate_key())])
    with sessions() as s:
        store.save(s, config("acme"), keys)
    live = live_merchants(database_url, keys)
    monkeypatch.setattr(runtime, "_merchants", lambda: live)
    app = create_app({"TESTING": True, "SESSIONS": sessions, "SETTINGS": load_settings(),
                      "ENQUEUE_EVENT": lambda _id: None, "ADMIN_TOKEN": "test-admin"})
    client = app.test_client()

    def post(merchant: str):
        body = wire(CREATED)
        return client.post(f"/webhooks/loop/{merchant}", data=body,
                           headers={"Content-Type": "application/json", "X-Loop-Signature": sign(HOOK, body)})

    assert post("acme").status_code == 202
    assert post("demo").status_code == 404  # the table has rows: the environment's merchant is not added
    with sessions() as s:
        store.disable(s, "acme")
    assert post("acme").status_code == 404
    with sessions() as s:
        store.set_enabled(s, "acme", True)
    assert post("acme").status_code == 200  # known again; the same delivery is a duplicate


def test_periodic_jobs_skip_a_disabled_merchant(sessions, database_url, monkeypatch):
    from workers import runtime, tasks

    monkeypatch.delenv("MERCHANTS_FILE", raising=False)
    monkeypatch.delenv("MERCHANTS_TOML", raising=False)
    keys = MultiFernet([Fernet(Fernet.generate_key())])
    with sessions() as s:
        store.save(s, config("acme"), keys)
        store.save(s, config("beta"), keys)
        store.disable(s, "acme")
    live = live_merchants(database_url, keys)
    monkeypatch.setattr(runtime, "_merchants", lambda: live)
    monkeypatch.setattr(tasks, "context", lambda: None)
    import fakeredis

    client = fakeredis.FakeRedis()
    monkeypatch.setattr(tasks, "_redis", lambda: client)
    sent: list[str] = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, args=None, **kw: sent.append(args[0]))
    tasks.poll_receipts.run()  # the beat's job: one task per merchant in effect
    assert sent == ["beta"]
    ran: list[str] = []
    monkeypatch.setattr(tasks.receiving, "poll_receipts", lambda _ctx, name: ran.append(name))
    tasks.poll_receipts_for.run("acme")  # queued before acme was disabled: does nothing
    tasks.poll_receipts_for.run("beta")
    assert ran == ["beta"]
