"""Where a webhook delivery's CPU goes, step by step, in one process (no HTTP server).

`python -m bench.phases DATABASE_URL REDIS_URL` (a database of its own, schema created) times
each step of the receiver on its own, as web/webhooks.py runs it, and the publish step both
ways: a `send_task` per delivery (the receiver before the relay) and the relay's one message
for a batch; then what the worker does first with the stored body (JSON, the event's schema,
its key: in the request before the receiver stored first). Prints JSON: milliseconds of CPU
per delivery for each.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

BATCH = 20  # deliveries per relay message in the batched publish step
# Step names bench/report.py quotes.
PARSE = "worker: read the body (json.loads, parse_event, event key; no longer in the request)"
STORE = "store: insert_raw"
SEND_TASK = "publish: a send_task per delivery (before the relay)"
RELAY = f"publish: the relay's one message for {BATCH}, per delivery"
WHOLE = "whole request, Flask test client (relay thread included)"
BASELINE = "baseline request, Flask test client"


def main() -> None:
    database_url, redis_url = sys.argv[1], sys.argv[2]
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, LOOP_WEBHOOK_SECRET="phases",
                      BENCH_BASELINE="1")
    import web
    from integration.loop.signature import verify
    from integration.loop.webhooks import dedupe_key, read_body
    from integration.store.inbox import insert_raw
    from workers.tasks import publish_events

    from .loadgen import bodies

    n = 1000
    work = bodies(2 * n + 100, 90_000_000, "phases")
    app = web.create_app()  # the real defaults: ENQUEUE_EVENT is the relay
    engine = app.config["SESSIONS"].kw["bind"]
    client = app.test_client()
    out: dict[str, float] = {}

    def timed(name, fn, count=n, per=1, settle=lambda: None):
        """CPU of the whole process (the relay's thread included) per delivery."""
        for i in range(50):
            fn(i)
        settle()
        cpu = time.process_time()
        for i in range(50, 50 + count):
            fn(i)
        settle()
        out[name] = (time.process_time() - cpu) / (count * per) * 1000

    def store(i):
        insert_raw(engine, merchant="demo", raw=work[i][0], lease_s=900.0)

    def read(i):
        raw = work[i][0]
        dedupe_key(read_body(raw), raw)

    def relay_drained():
        # Past the relay's linger, so the batch its thread holds is sent (and counted), then
        # whatever is still queued; sleeping costs no CPU.
        time.sleep(0.1)
        web._RELAY.flush()

    headers = lambda sig: {"Content-Type": "application/json", "X-Loop-Signature": sig}  # noqa: E731
    timed("verify signature", lambda i: verify(["phases"], work[i][0], work[i][1]))
    timed("body hash (SHA-256)", lambda i: hashlib.sha256(work[i][0]).hexdigest())
    timed(STORE, store)
    timed(SEND_TASK, lambda i: publish_events([i]))  # a lone row: one send_task
    timed(RELAY, lambda i: publish_events(list(range(i * BATCH, (i + 1) * BATCH))), count=n // 5, per=BATCH)
    offset = n + 50  # bodies the steps above did not store, so none is a duplicate
    timed(WHOLE, lambda i: client.post(
        "/webhooks/loop/demo", data=work[offset + i][0], headers=headers(work[offset + i][1])),
        settle=relay_drained)
    timed(BASELINE, lambda i: client.post(
        "/bench/noop", data=work[i][0], headers=headers(work[i][1])))
    web._RELAY.flush()
    timed(PARSE, read)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
