"""Shared fixtures: a throwaway database, the Flask app with a recording enqueue, and
(for the stack tests) the whole real stack started once per session."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from integration.loop.signature import sign
from integration.merchants import demo_merchant_config, parse_merchants
from integration.store.db import get_engine, session_factory
from integration.store.models import create_all
from tests.postgres import postgres, postgres_url  # noqa: F401  (fixtures)

SECRET = "test-webhook-secret"


def wire(payload: dict) -> bytes:
    """Serialise as Loop does: compact JSON with `/` escaped as `\\/`."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Every database test runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def sessions(database_url):
    create_all(get_engine(database_url))
    return session_factory(database_url)


@pytest.fixture
def merchants():
    config = demo_merchant_config()
    config["webhook_secrets"] = ["old-secret", SECRET]
    return parse_merchants([config])


@pytest.fixture
def enqueued():
    return []


@pytest.fixture
def app(sessions, merchants, enqueued):
    from web import create_app

    return create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                       "ENQUEUE_EVENT": enqueued.append, "ADMIN_TOKEN": "test-admin",
                       "MAX_CONTENT_LENGTH": 64 * 1024})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def post_webhook(client):
    def post(payload, *, secret=SECRET, raw: bytes | None = None, merchant="demo", headers=None):
        body = raw if raw is not None else wire(payload)
        h = {"Content-Type": "application/json", "X-Loop-Signature": sign(secret, body)}
        h.update(headers or {})
        return client.post(f"/webhooks/loop/{merchant}", data=body, headers=h)
    return post


class LoopReadsOpen:
    """Loop for the inbox's worker without a sandbox: every return it is asked about is open."""

    limiter = None

    def get_return(self, loop_id: str) -> dict:
        return {"id": loop_id, "state": "open", "line_items": []}


@pytest.fixture
def handle_stored(sessions, merchants):
    """The worker's part of a delivery: `loop.handle_event`'s body (events.handle_event) on each
    row given, or on every row still `received`; Loop is LoopReadsOpen. Returns the steps sent."""
    from sqlalchemy import select

    from integration.settings import load_settings
    from integration.store.models import WebhookEvent
    from integration.workflow import events
    from integration.workflow.context import Context

    sent: list[tuple[str, object]] = []
    ctx = Context(settings=load_settings(), merchants=merchants, sessions=sessions,
                  enqueue=lambda step, target: sent.append((step, target)))
    ctx._loop.update({name: LoopReadsOpen() for name in merchants})  # type: ignore[misc]

    def handle(*event_ids: int) -> list[tuple[str, object]]:
        if not event_ids:
            with sessions() as s:
                event_ids = tuple(s.scalars(select(WebhookEvent.id).where(WebhookEvent.status == "received")
                                            .order_by(WebhookEvent.id)))
        for event_id in event_ids:
            events.handle_event(ctx, event_id)
        return sent

    return handle


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The real stack: Valkey, both sandboxes, gunicorn, a Celery worker and beat."""
    from stack.demo import SCENARIOS, demo_env
    from stack.processes import Stack

    workdir = Path(tmp_path_factory.mktemp("stack"))
    env = {**demo_env(len(SCENARIOS)), "LOOP_WEBHOOK_SECRET": "stack-secret"}
    with Stack(workdir, extra_env=env, capture_broker=True) as running:  # for tests/security
        yield running


def pytest_terminal_summary(terminalreporter):
    """One line per reason tests were skipped (a missing program: tests/system.py), however many."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reasons[report.longrepr[2].removeprefix("Skipped: ")] += 1
    for reason, count in reasons.items():
        terminalreporter.write_line(f"SKIPPED {count} test{'s' if count > 1 else ''}: {reason}", yellow=True)


os.environ.setdefault("DATA_DIR", str(Path(__file__).parent.parent / "var" / "test"))
