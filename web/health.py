"""GET /healthz: can we reach the database and the broker?"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from integration.infra import redis_pool
from workers import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = {"database": _check_db(), "broker": _check_broker()}
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if ok else "degraded", **checks}), 200 if ok else 503


def _check_db() -> str:
    try:
        with current_app.config["SESSIONS"]() as session:
            session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # report, never raise: this is the page that says what is down
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    try:
        # The process's shared connection (integration.infra.redis_pool), not one per check.
        redis_pool.client(current_app.config.get("REDIS_URL") or runtime.redis_url()).ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
