"""Operator API: GET /api/returns/<loop_return_id> (Bearer ADMIN_TOKEN, or an operator's token)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from integration.store.status import find_return, return_view

from .operators import operator_for

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def _require_token():
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        return jsonify({"error": "operator API disabled: set ADMIN_TOKEN"}), 403
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or operator_for(given) is None:
        return jsonify({"error": "missing or invalid bearer token"}), 401


@bp.get("/returns/<loop_return_id>")
def get_return(loop_return_id: str):
    merchants = current_app.config["MERCHANTS"]
    merchant = request.args.get("merchant") or (next(iter(merchants)) if len(merchants) == 1 else None)
    if merchant is None:
        return jsonify({"error": "several merchants: add ?merchant=<name>"}), 400
    with current_app.config["SESSIONS"]() as session:
        ret = find_return(session, merchant, loop_return_id)
        if ret is None:
            return jsonify({"error": f"no return {loop_return_id} for merchant {merchant}"}), 404
        return jsonify(return_view(ret))
