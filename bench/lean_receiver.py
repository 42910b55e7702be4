"""A what-if for the receiver benchmark: the floor of a durable receiver on this stack.

Not the service's code, and never deployed: `make bench` serves `bench.lean_receiver:create_app()`
(the real app plus the route below) under the same gunicorn settings, to measure how close to
the do-nothing baseline a receiver that still stores every delivery before its 202 can get.

/bench/lean-raw/<merchant> does what web/webhooks.py does (signature, `json.loads`, the inbox
row committed under the same in-process SQLite lock, or on PostgreSQL with no lock, as
integration/store/inbox.py does, its id handed to the same relay) except
for the one thing that is a contract decision: no marshmallow in the request. The dedupe fields
are read straight from the JSON and stored with one prepared SQL statement; validation would
move to the worker, so an unusable event is answered 202 and failed there rather than answered
422.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext

from flask import Blueprint, current_app, jsonify, request

from integration.loop.signature import verify
from integration.loop.webhooks import dedupe_key
from integration.store.inbox import _SQLITE_WRITER
from integration.store.models import utcnow

bp = Blueprint("bench_lean", __name__)


def create_app():
    from web import create_app as real_app

    app = real_app()
    app.register_blueprint(bp)
    return app


_RAW_INSERT_SQLITE = ("INSERT INTO webhook_events (merchant, dedupe_key, body_sha256, status, topic, trigger, "
               "loop_return_id, payload, attempts, received_at, updated_at) "
               "VALUES (?, ?, ?, 'received', ?, ?, ?, ?, 0, ?, ?) "
               "ON CONFLICT (merchant, dedupe_key) DO NOTHING RETURNING id")
# psycopg's placeholders; the payload column is JSON there, so the text is cast.
_RAW_INSERT_POSTGRES = (_RAW_INSERT_SQLITE.replace("?", "%s")
                        .replace("%s, 0, %s, %s)", "%s::json, 0, %s, %s)"))


@bp.post("/bench/lean-raw/<merchant>")
def receive_raw(merchant: str):
    config = current_app.config["MERCHANTS"].get(merchant)
    if config is None:
        return jsonify({"error": "unknown merchant"}), 404
    raw = request.get_data(cache=True)
    if not verify(config.webhook_secrets, raw, request.headers.get("X-Loop-Signature")):
        return jsonify({"error": "missing or invalid X-Loop-Signature"}), 401
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return jsonify({"error": "body is not valid JSON"}), 400
    if not isinstance(payload, dict):
        return jsonify({"error": "not a usable Loop event"}), 422
    loop_id = payload.get("return_id") if payload.get("topic") == "return.processing" else payload.get("id")
    event = {"topic": str(payload.get("topic")), "trigger": str(payload.get("trigger")),
             "loop_return_id": str(loop_id or ""), "state": payload.get("state"),
             "edited_at": payload.get("edited_at"), "label_updated_at": payload.get("label_updated_at"),
             "updated_at": payload.get("updated_at")}
    now = utcnow().isoformat(sep=" ")
    engine = current_app.config["SESSIONS"].kw["bind"]
    sqlite = engine.dialect.name == "sqlite"
    with _SQLITE_WRITER if sqlite else nullcontext(), engine.begin() as conn:
        row_id = conn.exec_driver_sql(_RAW_INSERT_SQLITE if sqlite else _RAW_INSERT_POSTGRES, (
            merchant, dedupe_key(event, raw), hashlib.sha256(raw).hexdigest(), event["topic"],
            event["trigger"], event["loop_return_id"], raw.decode(), now, now)).scalar()
    if row_id is None:
        return jsonify({"status": "duplicate delivery; already stored"}), 200
    current_app.config["ENQUEUE_EVENT"](row_id)  # the relay: a queue put, never raises
    return jsonify({"status": "accepted", "event_id": row_id}), 202
