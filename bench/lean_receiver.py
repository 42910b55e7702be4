"""A what-if for the receiver benchmark: the same contract as web/webhooks.py, written lean.

Not the service's code, and never deployed: `make bench` serves `bench.lean_receiver:create_app()`
(the real app plus these routes) under the same gunicorn settings to measure what the changes
recommended in docs/benchmarks.md would buy, in the same run. What it does differently:

1. one `LoopEventSchema` instance, built once, instead of one per request;
2. one Core `INSERT .. ON CONFLICT DO NOTHING RETURNING id` instead of an ORM unit of work
   and a caught IntegrityError for duplicates;
3. at /bench/lean-outbox/<merchant>, no publish in the request at all: the committed
   `received` row is the durable record, and a relay (not part of this measurement) would
   publish rows in batches after commit. /bench/lean/<merchant> publishes exactly as the
   receiver does today.

/bench/lean-raw/<merchant> is the floor, to show how close to the baseline a durable receiver
can get on this stack at all: no marshmallow (the dedupe fields read straight from the JSON;
validation would move to the worker, so an unusable event is answered 202 and failed there
rather than answered 422), one prepared SQL statement, no publish.
"""
from __future__ import annotations

import hashlib
import json
import types

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from integration.events import HANDLED_TOPICS, LoopEventSchema, dedupe_key, parse_event
from integration.models import WebhookEvent
from integration.signature import verify

bp = Blueprint("bench_lean", __name__)
_SCHEMA = LoopEventSchema()  # load() keeps no per-call state on the instance
_TABLE = WebhookEvent.__table__


# integration.events.parse_event itself, run with one shared schema instance instead of a new
# one per call, so the what-if keeps up with whatever parse_event does today.
_parse = types.FunctionType(parse_event.__code__, {**parse_event.__globals__,
                                                   "LoopEventSchema": lambda: _SCHEMA},
                            "parse_event_shared_schema")


def create_app():
    from web import create_app as real_app

    app = real_app()
    app.register_blueprint(bp)
    return app


@bp.post("/bench/lean/<merchant>")
def receive(merchant: str):
    return _receive(merchant, publish=True)


@bp.post("/bench/lean-outbox/<merchant>")
def receive_outbox(merchant: str):
    return _receive(merchant, publish=False)


_RAW_INSERT = ("INSERT INTO webhook_events (merchant, dedupe_key, body_sha256, status, topic, trigger, "
               "loop_return_id, payload, attempts, received_at, updated_at) "
               "VALUES (?, ?, ?, 'received', ?, ?, ?, ?, 0, ?, ?) "
               "ON CONFLICT (merchant, dedupe_key) DO NOTHING RETURNING id")


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
    now = _now().isoformat(sep=" ")
    engine = current_app.config["SESSIONS"].kw["bind"]
    with engine.begin() as conn:
        row_id = conn.exec_driver_sql(_RAW_INSERT, (
            merchant, dedupe_key(event, raw), hashlib.sha256(raw).hexdigest(), event["topic"],
            event["trigger"], event["loop_return_id"], raw.decode(), now, now)).scalar()
    if row_id is None:
        return jsonify({"status": "duplicate delivery; already stored"}), 200
    return jsonify({"status": "accepted", "event_id": row_id}), 202


def _receive(merchant: str, publish: bool):
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
    try:
        event = _parse(payload)
    except ValidationError as exc:
        return jsonify({"error": "not a usable Loop event", "fields": exc.messages}), 422
    handled = event["topic"] in HANDLED_TOPICS
    status = "received" if handled else "ignored"
    engine = current_app.config["SESSIONS"].kw["bind"]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = (dialect.insert(_TABLE)
            .values(merchant=merchant, dedupe_key=dedupe_key(event, raw),
                    body_sha256=hashlib.sha256(raw).hexdigest(), status=status, topic=event["topic"],
                    trigger=event["trigger"], loop_return_id=event["loop_return_id"], payload=event,
                    attempts=0, received_at=_now(), updated_at=_now())
            .on_conflict_do_nothing(index_elements=["merchant", "dedupe_key"])
            .returning(_TABLE.c.id))
    with engine.begin() as conn:
        row_id = conn.execute(stmt).scalar()
    if row_id is None:
        return jsonify({"status": "duplicate delivery; already stored"}), 200
    if handled and publish:
        try:
            current_app.config["ENQUEUE_EVENT"](row_id)
        except Exception:  # as today: the row stays `received` for the sweeper
            pass
    return jsonify({"status": "accepted" if handled else "ignored", "event_id": row_id}), 202


def _now():
    from integration.models import utcnow

    return utcnow()
