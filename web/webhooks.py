"""POST /webhooks/loop/<merchant>: verify, store, enqueue after commit, answer fast."""
from __future__ import annotations

import hashlib
import json
import logging

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from integration.loop.signature import verify
from integration.loop.webhooks import HANDLED_TOPICS, dedupe_key, parse_event
from integration.store.inbox import insert_event
from integration.store.models import InboxStatus

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)


@bp.post("/webhooks/loop/<merchant>")
def receive(merchant: str):
    config = current_app.config["MERCHANTS"].get(merchant)
    if config is None:
        return _answer(404, "unknown merchant")
    raw = request.get_data(cache=True)  # raw bytes: the signature covers them, not re-serialised JSON
    if not verify(config.webhook_secrets, raw, request.headers.get("X-Loop-Signature")):
        log.warning("webhook.bad_signature merchant=%s bytes=%d", merchant, len(raw))
        return _answer(401, "missing or invalid X-Loop-Signature")
    try:
        payload = _load_json(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _answer(400, "body is not valid JSON")

    body_hash = hashlib.sha256(raw).hexdigest()
    try:
        event = parse_event(payload)
    except ValidationError as exc:
        # Kept for inspection (without the body: it may hold shopper data), then refused.
        _store(merchant, body_hash, body_hash, None, InboxStatus.INVALID, error=json.dumps(exc.messages)[:2000])
        return jsonify({"error": "not a usable Loop event", "fields": exc.messages}), 422

    handled = event["topic"] in HANDLED_TOPICS
    row_id = _store(merchant, dedupe_key(event, raw), body_hash, event,
                    InboxStatus.RECEIVED if handled else InboxStatus.IGNORED)
    if row_id is None:
        return _answer(200, "duplicate delivery; already stored")
    return jsonify({"status": "accepted" if handled else "ignored", "event_id": row_id}), 202


def _load_json(raw: bytes):
    """Standard JSON only: Python's NaN and Infinity are refused like any other non-JSON."""
    return json.loads(raw, parse_constant=_not_json)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _store(merchant: str, key: str, body_hash: str, event: dict | None, status: str,
           error: str | None = None) -> int | None:
    """Insert and commit the inbox row; only then hand it on for processing."""
    engine = current_app.config["SESSIONS"].kw["bind"]
    row_id = insert_event(engine, merchant=merchant, dedupe_key=key, body_sha256=body_hash,
                          status=status, event=event, error=error,
                          lease_s=current_app.config["SETTINGS"].stuck_after_s)
    if row_id is not None and status == InboxStatus.RECEIVED:
        try:
            current_app.config["ENQUEUE_EVENT"](row_id)
        except Exception:  # broker down: the row stays `received` and the sweeper picks it up
            log.exception("webhook.enqueue_failed event_id=%s", row_id)
    return row_id


def _answer(status: int, message: str):
    key = "status" if status < 400 else "error"
    return jsonify({key: message}), status
