"""Sentry is optional: without SENTRY_DSN nothing is imported or started; with it, the web and
Celery processes report exceptions, scrubbed of shopper data and secrets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integration.settings import load_settings
from workers.error_reporting import init_error_reporting, process_name

ROOT = Path(__file__).resolve().parents[2]
DSN = "https://public-key-5e6f@o1.ingest.sentry.example/42"


def test_without_a_dsn_sentry_is_neither_imported_nor_started(monkeypatch, sessions, merchants):
    from web import create_app

    monkeypatch.delenv("SENTRY_DSN", raising=False)
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # any import of it would now fail
    assert init_error_reporting("web", load_settings(), merchants) is False
    create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants, "ADMIN_TOKEN": "t"})


def test_a_dsn_without_the_sdk_refuses_to_start(monkeypatch, merchants):
    monkeypatch.setenv("SENTRY_DSN", DSN)
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)
    with pytest.raises(RuntimeError, match=r"sentry-sdk is not installed.*\.\[sentry\]"):
        init_error_reporting("web", load_settings(), merchants)


def test_celery_processes_are_told_apart():
    assert [process_name(a) for a in (["celery", "-A", "workers.celery_app", "worker", "-Q", "loop"],
                                      ["celery", "-A", "workers.celery_app", "beat"],
                                      ["celery", "-A", "workers.celery_app", "flower"])] == \
        ["worker", "beat", "flower"]


@pytest.fixture
def sentry_events(monkeypatch):
    """Events the SDK would send, captured by a transport instead of the network."""
    sentry_sdk = pytest.importorskip("sentry_sdk", reason="the optional `sentry` extra is not installed")
    from sentry_sdk.transport import Transport

    sent: list[dict] = []

    class Capture(Transport):
        def capture_envelope(self, envelope):
            if envelope.get_event() is not None:
                sent.append(envelope.get_event())

    monkeypatch.setenv("SENTRY_DSN", DSN)
    yield sent, Capture
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # an inactive client again: nothing is sent by later tests


def test_a_web_exception_is_reported_without_shopper_data_or_secrets(sentry_events, sessions, merchants):
    from web import create_app

    sent, transport = sentry_events
    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants, "ADMIN_TOKEN": "t"})
    # create_app initialised the SDK from SENTRY_DSN; again with the capturing transport.
    init_error_reporting("web", load_settings(), merchants, transport=transport)
    secret = merchants["demo"].webhook_secrets[-1]

    # Built at run time: the source lines a report shows around each frame hold none of them.
    name, city, email, signature, token = ("Jane " + "Doe", "Brook" + "lyn", "jane@" + "example.com",
                                           "c2lnbm" + "F0dXJl", "t0k" + "en-x")

    @app.post("/boom")
    def boom():
        address = {"name": name, "city": city}  # a local variable: never collected
        raise ValueError(f"refused {secret} for {email} ({len(address)})")

    with pytest.raises(ValueError):
        app.test_client().post("/boom", json={"customer": email},
                               headers={"X-Loop-Signature": signature, "Authorization": f"Bearer {token}"})
    [event] = sent
    text = json.dumps(event)
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert event["tags"]["process"] == "web"
    for leak in (secret, email, name, city, signature, token):
        assert leak not in text, leak
    assert all("vars" not in frame for value in event["exception"]["values"]
               for frame in value["stacktrace"]["frames"])


def test_workers_and_beat_start_reporting_when_celery_loads_the_app(tmp_path):
    pytest.importorskip("sentry_sdk", reason="the optional `sentry` extra is not installed")
    probe = ("import sys; sys.argv = ['celery', 'beat']; import workers.celery_app, sentry_sdk; "
             "c = sentry_sdk.get_client(); "
             "print(c.is_active(), c.options['send_default_pii'], c.options['include_local_variables'], "
             "sorted(i for i in c.integrations if i in ('celery', 'flask')), "
             "sentry_sdk.get_global_scope()._tags['process'])")
    env = {**os.environ, "SENTRY_DSN": DSN, "REDIS_URL": "redis://127.0.0.1:1/0", "DATA_DIR": str(tmp_path),
           "APP_ENV": "development"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True False False ['celery', 'flask'] beat"
