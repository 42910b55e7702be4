"""POST /bench/noop: the baseline the receiver benchmark compares against (`make bench`).

Same server, same gunicorn settings, same request body and headers as the webhook receiver,
but it answers 202 and does nothing: no signature check, no database, no broker. Registered
only when BENCH_BASELINE=1, so it never exists in a deployed service.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("bench_baseline", __name__)


@bp.post("/bench/noop")
def noop():
    return "", 202
