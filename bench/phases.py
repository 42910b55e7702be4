"""Where a webhook delivery's CPU goes, step by step, in one process (no HTTP server).

`python -m bench.phases DATABASE_URL REDIS_URL` (a database of its own) times each step of the receiver on its own,
as web/webhooks.py runs it and as the recommended changes would, and prints JSON:
milliseconds of CPU per delivery for each.
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    database_url, redis_url = sys.argv[1], sys.argv[2]
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, LOOP_WEBHOOK_SECRET="phases",
                      BENCH_BASELINE="1")
    from sqlalchemy.dialects import sqlite

    from integration.events import dedupe_key, parse_event
    from integration.models import WebhookEvent
    from integration.signature import verify
    from web import create_app
    from workers import runtime

    from .lean_receiver import _parse
    from .loadgen import bodies

    n = 1000
    work = bodies(4 * n + 400, 90_000_000, "phases")
    payloads = [json.loads(raw) for raw, _ in work]
    events = [parse_event(p) for p in payloads]
    sessions = runtime.sessions()
    engine = sessions.kw["bind"]
    app = create_app()
    client = app.test_client()
    enqueue = app.config["ENQUEUE_EVENT"]
    counter = iter(range(10**9))
    out: dict[str, float] = {}

    def timed(name, fn, count=n):
        for i in range(50):
            fn(i)
        cpu = time.process_time()
        for i in range(50, 50 + count):
            fn(i)
        out[name] = (time.process_time() - cpu) / count * 1000

    def orm_store(i):
        s = sessions()
        ev = events[i]
        s.add(WebhookEvent(merchant="demo", dedupe_key=f"orm-{next(counter)}", body_sha256="x", status="received",
                           topic=ev["topic"], trigger=ev["trigger"], loop_return_id=ev["loop_return_id"],
                           payload=ev))
        s.commit()
        s.close()

    def core_store(i):
        ev = events[i]
        stmt = (sqlite.insert(WebhookEvent.__table__)
                .values(merchant="demo", dedupe_key=f"core-{next(counter)}", body_sha256="x", status="received",
                        topic=ev["topic"], trigger=ev["trigger"], loop_return_id=ev["loop_return_id"],
                        payload=ev, attempts=0)
                .on_conflict_do_nothing(index_elements=["merchant", "dedupe_key"])
                .returning(WebhookEvent.__table__.c.id))
        with engine.begin() as conn:
            conn.execute(stmt).scalar()

    headers = lambda sig: {"Content-Type": "application/json", "X-Loop-Signature": sig}  # noqa: E731
    timed("verify signature", lambda i: verify(["phases"], work[i][0], work[i][1]))
    timed("json.loads", lambda i: json.loads(work[i][0]))
    timed("parse_event (a schema per call, today)", lambda i: parse_event(payloads[i]))
    timed("parse_event (one shared schema)", lambda i: _parse(payloads[i]))
    timed("dedupe key + body hash", lambda i: dedupe_key(events[i], work[i][0]))
    timed("store: ORM add + commit (today)", orm_store)
    timed("store: one Core INSERT .. ON CONFLICT", core_store)
    timed("publish: Celery send_task (today)", lambda i: enqueue(i))
    offset = 2 * n + 200
    timed("whole request, Flask test client", lambda i: client.post(
        "/webhooks/loop/demo", data=work[offset + i][0], headers=headers(work[offset + i][1])))
    timed("baseline request, Flask test client", lambda i: client.post(
        "/bench/noop", data=work[i][0], headers=headers(work[i][1])))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
