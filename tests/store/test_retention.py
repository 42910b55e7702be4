"""Retention: the shopper's address leaves an inbox row once the row is finished with, and the
scheduled purge clears old webhook bodies, errors and timeline details while keeping the rows
(and their dedupe keys), on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import JSON, select, update
from sqlalchemy.orm import undefer

from integration.settings import load_settings
from integration.store.models import Return, TimelineEntry, WebhookEvent, utcnow
from integration.store.retention import purge_old_data
from integration.workflow import events as workflow_events
from integration.workflow.context import Context
from integration.workflow.sweeper import sweep
from tests.web.test_receiver import CREATED

OLD = timedelta(days=91)  # past the default RETENTION_DAYS (90)


def events(sessions) -> list[WebhookEvent]:
    with sessions() as s:
        return list(s.scalars(select(WebhookEvent).options(undefer(WebhookEvent.raw_body))
                              .order_by(WebhookEvent.id)))


def age(sessions, model, column: str, by: timedelta, **where) -> None:
    with sessions() as s:
        table = model.__table__
        s.execute(update(table).where(*(table.c[k] == v for k, v in where.items()))
                  .values({column: utcnow() - by}))
        s.commit()


def purge(sessions, **kw) -> dict[str, int]:
    return purge_old_data(sessions, utcnow(), 90, **kw)


def test_an_old_delivery_sent_again_is_still_a_duplicate_after_the_purge(post_webhook, sessions, enqueued,
                                                                         handle_stored):
    assert post_webhook(CREATED).status_code == 202
    handle_stored()
    [stored] = events(sessions)
    assert stored.status == "done"
    age(sessions, WebhookEvent, "received_at", OLD)

    assert purge(sessions)["webhook_events"] == 1
    [purged] = events(sessions)
    assert (purged.id, purged.payload, purged.dedupe_key) == (stored.id, None, stored.dedupe_key)
    assert purged.event_key == stored.event_key and purged.raw_body is None
    assert (purged.topic, purged.trigger, purged.loop_return_id) == ("return", "return.created", "52393555")

    again = post_webhook(CREATED)
    assert again.status_code == 200 and "duplicate" in again.get_json()["status"]
    assert len(events(sessions)) == 1 and enqueued == [stored.id]


def test_only_finished_deliveries_older_than_the_retention_lose_their_texts(post_webhook, sessions,
                                                                           handle_stored):
    post_webhook(CREATED)  # old but still to be handled: kept, unread
    post_webhook({**CREATED, "trigger": "return.updated", "state": "closed"})  # done, but recent: kept
    post_webhook({**CREATED, "trigger": "return.updated", "state": "bogus", "line_items": "x"})  # invalid, old
    first, recent, invalid = events(sessions)
    handle_stored(recent.id, invalid.id)
    first, recent, invalid = events(sessions)
    assert (recent.status, invalid.status) == ("done", "invalid") and invalid.last_error
    age(sessions, WebhookEvent, "received_at", OLD, id=first.id)
    age(sessions, WebhookEvent, "received_at", OLD, id=invalid.id)

    assert purge(sessions)["webhook_events"] == 1
    first, recent, invalid = events(sessions)
    assert first.raw_body is not None and recent.payload is not None
    assert (invalid.status, invalid.last_error, invalid.body_sha256) == ("invalid", None, invalid.body_sha256)


def test_timeline_details_older_than_the_retention_are_cleared_and_the_rest_kept(sessions):
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id="1", state="complete", units=[], rma_lines=[])
        ret.timeline += [TimelineEntry(to_state="received", cause="webhook return.created", detail="old one"),
                         TimelineEntry(to_state="complete", cause="return complete", detail="new one")]
        s.add(ret)
        s.commit()
        old_id = ret.timeline[0].id
    age(sessions, TimelineEntry, "at", OLD, id=old_id)

    assert purge(sessions)["timeline"] == 1
    with sessions() as s:
        entries = list(s.scalars(select(TimelineEntry).order_by(TimelineEntry.id)))
        assert [(t.cause, t.detail) for t in entries] == [("webhook return.created", None),
                                                           ("return complete", "new one")]


def test_addresses_left_on_returns_past_received_are_cleared_at_once(sessions):
    """Rows written before the lifecycle cleared the address on the way out of `received`."""
    with sessions() as s:
        s.add_all([Return(merchant="demo", loop_return_id=str(i), state=state, units=[], rma_lines=[],
                          ship_from={"name": "Jane"})
                   for i, state in enumerate(["received", "cancelled", "complete", "needs_attention"])])
        s.commit()
    assert purge(sessions)["ship_from"] == 3
    with sessions() as s:
        kept = {r.state: r.ship_from for r in s.scalars(select(Return))}
    assert kept == {"received": {"name": "Jane"}, "cancelled": None, "complete": None, "needs_attention": None}


def test_the_purge_goes_in_batches_and_a_second_run_finds_nothing(sessions):
    with sessions() as s:
        s.add_all([WebhookEvent(merchant="demo", dedupe_key=str(i), body_sha256="x", status="done",
                                payload={"topic": "return"}, received_at=utcnow() - OLD) for i in range(5)])
        s.commit()
    # A row whose body was stored as JSON null (before SQL NULL was used) is cleared once too.
    with sessions() as s:
        s.execute(update(WebhookEvent.__table__).where(WebhookEvent.dedupe_key == "4")
                  .values(payload=JSON.NULL))
        s.commit()
    assert purge(sessions, batch=2, max_batches=2)["webhook_events"] == 4  # two batches of two
    assert purge(sessions, batch=2, max_batches=2)["webhook_events"] == 1
    assert purge(sessions, batch=2, max_batches=2) == {"webhook_events": 0, "timeline": 0, "ship_from": 0}
    assert len(events(sessions)) == 5


# --- the inbox row's address goes whenever the row is finished with ---------------------------
def context(sessions, merchants) -> Context:
    return Context(settings=load_settings(), merchants=merchants, sessions=sessions,
                   enqueue=lambda step, target: None)


def given_up_by_the_sweeper(sessions, merchants, event_id: int) -> None:
    """The row's attempts are spent and its lease long over: the sweeper gives it up."""
    with sessions() as s:
        ev = s.get(WebhookEvent, event_id)
        ev.attempts, ev.next_attempt_at = 99, utcnow() - timedelta(days=1)
        s.commit()
    assert sweep(context(sessions, merchants))["parked"] == 1


def test_an_unread_event_given_up_by_the_sweeper_keeps_no_raw_body(post_webhook, sessions, merchants):
    post_webhook(CREATED)
    [stored] = events(sessions)
    assert b"Jane Doe" in stored.raw_body
    given_up_by_the_sweeper(sessions, merchants, stored.id)
    [failed] = events(sessions)
    assert (failed.status, failed.raw_body, failed.payload) == ("failed", None, None)


def test_a_finished_row_that_still_has_its_raw_body_loses_it_at_the_purge(post_webhook, sessions):
    post_webhook(CREATED)
    with sessions() as s:  # finished by hand, say, without finish_event
        s.execute(update(WebhookEvent).values(status="failed", next_attempt_at=None))
        s.commit()
    age(sessions, WebhookEvent, "received_at", OLD)
    assert purge(sessions)["webhook_events"] == 1
    assert events(sessions)[0].raw_body is None


def test_an_event_given_up_by_the_sweeper_keeps_no_address(post_webhook, sessions, merchants):
    post_webhook(CREATED)
    [stored] = events(sessions)
    assert workflow_events._claim(context(sessions, merchants), stored.id)  # read, then its worker died
    [stored] = events(sessions)
    assert stored.payload["ship_from"]["name"] == "Jane Doe" and stored.raw_body is None
    given_up_by_the_sweeper(sessions, merchants, stored.id)
    [failed] = events(sessions)
    assert failed.status == "failed" and "ship_from" not in failed.payload
    assert failed.payload["loop_return_id"] == "52393555"


def test_an_event_that_fails_keeps_no_address(post_webhook, sessions, merchants):
    post_webhook(CREATED)
    [stored] = events(sessions)
    workflow_events.handle_event(context(sessions, {}), stored.id)  # its merchant is gone
    [failed] = events(sessions)
    assert failed.status == "failed" and "ship_from" not in failed.payload
    assert failed.raw_body is None and failed.payload["loop_return_id"] == "52393555"


def test_beat_runs_the_purge_on_the_periodic_queue(tmp_path):
    import json
    import os
    import subprocess
    import sys

    probe = ("import json, workers.celery_app as c; from workers.names import TASK_ROUTES; "
             "e = c.app.conf.beat_schedule['purge-old-data']; "
             "print(json.dumps([e['task'], e['schedule'], 'integration.purge' in c.app.tasks, "
             "TASK_ROUTES['integration.purge']]))")
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "DATA_DIR": str(tmp_path),
           "RETENTION_INTERVAL_S": "1800", "APP_ENV": "development"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "integration.purge", 1800.0, True, {"queue": "periodic"}]
