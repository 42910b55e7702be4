"""POST /webhooks/loop/<merchant>: verify, store the raw body, enqueue after commit, answer fast.

Store first: the request only checks the signature and commits the signed bytes (a re-delivery
of the same bytes answers 200). Reading them (JSON, the event's schema, its dedupe key) is the
worker's first step (integration/workflow/events.py), so a body that is not a usable event is
answered 202 here and marked `invalid` there.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from integration.loop.signature import verify
from integration.store.inbox import insert_raw

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)


@bp.post("/webhooks/loop/<merchant>")
def receive(merchant: str):
    config = current_app.config["MERCHANTS"].get(merchant)
    if config is None:
        return _answer(404, "unknown merchant")
    raw = request.get_data(cache=True)  # raw bytes (413 over the cap): the signature covers them
    if not verify(config.webhook_secrets, raw, request.headers.get("X-Loop-Signature")):
        log.warning("webhook.bad_signature merchant=%s bytes=%d", merchant, len(raw))
        return _answer(401, "missing or invalid X-Loop-Signature")
    row_id = insert_raw(current_app.config["SESSIONS"].kw["bind"], merchant=merchant, raw=raw,
                        lease_s=current_app.config["SETTINGS"].stuck_after_s)
    if row_id is None:
        return _answer(200, "duplicate delivery; already stored")
    # Only once committed is the row handed on; should this fail, it stays `received` and the
    # sweeper picks it up.
    try:
        current_app.config["ENQUEUE_EVENT"](row_id)
    except Exception:  # broker down (the relay's submit never raises; a direct enqueue may)
        log.exception("webhook.enqueue_failed event_id=%s", row_id)
    # Built by hand: cheaper than jsonify, on the path every delivery takes.
    return current_app.response_class(f'{{"event_id":{row_id},"status":"accepted"}}\n', 202,
                                      mimetype="application/json")


def _answer(status: int, message: str):
    key = "status" if status < 400 else "error"
    return jsonify({key: message}), status
