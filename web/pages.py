"""Operator pages under /ops: the returns list, one page per return with retry and re-decide,
the parked returns grouped by cause with a bulk retry (previewed first), failed and invalid
webhook deliveries with replay, the shadow mode agreement report, and the merchants
(web/merchant_pages.py).

Server-rendered, no JavaScript. Same credentials as the API: ADMIN_TOKEN (acting as "admin") or
an operator's own token (OPERATOR_TOKENS, acting under its name), given as the password of HTTP
Basic authentication (any user name); every action records the operator (`g.operator`).
Browsers send Basic credentials on cross-site requests too, so every POST carries a CSRF token
derived from ADMIN_TOKEN and the operator, and must come from this origin.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select

from integration.ops import actions, queries, shadow
from integration.ops.actions import ActionResult, Outcome
from integration.ops.deliveries import PROBLEMS, list_deliveries
from integration.ops.paging import BadCursor, Cursor
from integration.store.models import InboxStatus, Return
from integration.store.status import find_return, return_view
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.rules import label, tally

from .operators import operator_for

bp = Blueprint("pages", __name__, url_prefix="/ops")
PAGE_SIZE = 50
STATES = [lc.RECEIVED, lc.RMA_CREATED, lc.TRANSMITTED, lc.PARTIALLY_RECEIVED, lc.FULLY_RECEIVED,
          lc.DECIDED, lc.SHADOW_DECIDED, lc.LOOP_ACTIONED, lc.RMA_CLOSED, lc.COMPLETE, lc.CANCELLING, lc.CANCELLED,
          lc.NEEDS_ATTENTION]


def _derived(purpose: str) -> str:
    token = current_app.config["ADMIN_TOKEN"]
    return hmac.new(token.encode(), f"rlm-loop {purpose}".encode(), hashlib.sha256).hexdigest()


@bp.record_once
def _configure(state) -> None:
    app = state.app
    # Flash messages live in a signed cookie; its key follows ADMIN_TOKEN (rotating one rotates both).
    if not app.secret_key and app.config.get("ADMIN_TOKEN"):
        token = app.config["ADMIN_TOKEN"].encode()
        app.secret_key = hmac.new(token, b"rlm-loop session", hashlib.sha256).hexdigest()
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = app.config["SETTINGS"].production


@bp.before_request
def _require_login():
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        return Response("operator pages disabled: set ADMIN_TOKEN\n", 403, mimetype="text/plain")
    auth = request.authorization
    operator = operator_for(auth.password) if auth is not None and auth.type == "basic" else None
    if operator is None:
        return Response("log in with any user name and ADMIN_TOKEN, or your operator token, as the "
                        "password\n", 401,
                        {"WWW-Authenticate": 'Basic realm="rlm-loop operators", charset="UTF-8"'},
                        mimetype="text/plain")
    g.operator = operator
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            abort(403)
        if not hmac.compare_digest(request.form.get("csrf", "").encode(), _csrf_token().encode()):
            abort(403)


def _csrf_token() -> str:
    """The logged-in operator's CSRF token: one operator's page cannot post as another."""
    return _derived(f"csrf {g.operator}")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _template_globals() -> dict:
    return {"csrf_token": _csrf_token() if "operator" in g else "", "operator": g.get("operator")}


@bp.get("/")
def index():
    query = request.query_string.decode()  # /ops?state=... lists with those filters
    return redirect(url_for("pages.returns") + (f"?{query}" if query else ""))


def _since(text: str | None) -> datetime | None:
    """`since` as the pages take it (YYYY-MM-DD, UTC); anything else is a 400."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        abort(400, description=f"since: not a day as YYYY-MM-DD: {text[:40]!r}")


@bp.get("/returns")
def returns():
    """The list: filters as GET parameters, newest first, a page at a time by cursor (`after`)."""
    merchant = request.args.get("merchant") or None
    state = request.args.get("state") or None
    query = (request.args.get("q") or "").strip()
    reason = (request.args.get("reason") or "").strip()
    since_text = request.args.get("since") or ""
    since = _since(since_text)
    try:
        after = Cursor.decode(request.args["after"]) if request.args.get("after") else None
    except BadCursor as exc:
        abort(400, description=str(exc))
    filters = queries.return_filters(merchant=merchant, reason=reason, since=since, search=query)
    with current_app.config["SESSIONS"]() as s:
        counts = dict(s.execute(select(Return.state, func.count()).where(*filters)
                                .group_by(Return.state)).all())
        page = queries.list_returns(s, merchant=merchant, state=state, reason=reason, since=since,
                                    search=query, after=after, limit=PAGE_SIZE)
    return render_template(
        "returns.html", rows=page.rows, counts=counts, states=STATES, merchant=merchant,
        state=state, query=query, reason=reason, since=since_text, first_page=after is None,
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
        merchants=sorted(current_app.config["MERCHANTS"]))


@bp.get("/returns/<merchant>/<loop_return_id>")
def return_page(merchant: str, loop_return_id: str):
    with current_app.config["SESSIONS"]() as s:
        ret = find_return(s, merchant, loop_return_id)
        if ret is None:
            abort(404)
        view = return_view(ret)
        per_line, unexpected = tally(ret.rma_lines or [], view["receipts"])
        lines = [{**line, "received": per_line[line["line_number"]].received,
                  "conditions": dict(per_line[line["line_number"]].by_condition)}
                 for line in ret.rma_lines or []]
        return render_template(
            "return.html", view=view, units=ret.units or [], lines=lines, unexpected=unexpected,
            can_retry=ret.state == lc.NEEDS_ATTENTION, can_redecide=actions.can_redecide(ret),
            attention_step=ret.attention_step, label=label)


@bp.post("/returns/<merchant>/<loop_return_id>/retry")
def retry(merchant: str, loop_return_id: str):
    return _act(actions.retry_return, merchant, loop_return_id)


@bp.post("/returns/<merchant>/<loop_return_id>/redecide")
def redecide(merchant: str, loop_return_id: str):
    return _act(actions.redecide_return, merchant, loop_return_id)


def _context() -> Context:
    config = current_app.config
    return Context(settings=config["SETTINGS"], merchants=config["MERCHANTS"],
                   sessions=config["SESSIONS"], enqueue=config["ENQUEUE_STEP"])


def _act(action: Callable[..., ActionResult], merchant: str, loop_return_id: str):
    if merchant not in current_app.config["MERCHANTS"]:
        abort(404)
    result = action(_context(), merchant, loop_return_id, operator=g.operator)
    if result.outcome is Outcome.NOT_FOUND:
        abort(404)
    flash(result.message)
    return redirect(url_for("pages.return_page", merchant=merchant, loop_return_id=loop_return_id),
                    code=303)


# --- webhook deliveries ----------------------------------------------------------------------
def _delivery_filters(values) -> dict:
    return {"merchant": values.get("merchant") or None, "status": values.get("status") or None,
            "since": values.get("since") or None}


@bp.get("/deliveries")
def deliveries():
    """Failed and invalid webhook deliveries (or those of one status), newest first."""
    filters = _delivery_filters(request.args)
    after = request.args.get("after") or None
    try:
        since = (datetime.strptime(filters["since"], "%Y-%m-%d").replace(tzinfo=UTC)
                 if filters["since"] else None)
        with current_app.config["SESSIONS"]() as s:
            page = list_deliveries(s, merchant=filters["merchant"], since=since, after=after,
                                   statuses=[filters["status"]] if filters["status"] else PROBLEMS,
                                   limit=PAGE_SIZE)
    except ValueError as exc:
        return Response(f"{exc}\n", 400, mimetype="text/plain")
    return render_template("deliveries.html", page=page, filters=filters, after=after,
                           statuses=list(InboxStatus), merchants=sorted(current_app.config["MERCHANTS"]))


@bp.post("/deliveries/<int:event_id>/replay")
def replay(event_id: int):
    result = actions.replay_event(_context(), event_id, operator=g.operator)
    if result.outcome is Outcome.NOT_FOUND:
        abort(404)
    flash(result.message)
    return redirect(url_for("pages.deliveries", **_delivery_filters(request.form)), code=303)


# --- parked returns grouped by cause, and a group's bulk retry ------------------------------------
@bp.get("/attention")
def attention():
    merchant = request.args.get("merchant") or None
    with current_app.config["SESSIONS"]() as s:
        groups = queries.attention_groups(s, merchant)
    return render_template("attention.html", groups=groups, merchant=merchant,
                           merchants=sorted(current_app.config["MERCHANTS"]))


def _group_args(values) -> tuple[str, str, str]:
    merchant, step, key = (values.get(k, "") for k in ("merchant", "step", "reason_key"))
    if merchant not in current_app.config["MERCHANTS"] or not step:
        abort(404)
    return merchant, step, key


@bp.get("/attention/preview")
def attention_preview():
    """The dry run: what retrying the group would do to each return. Changes nothing."""
    return _bulk(*_group_args(request.args), dry_run=True)


@bp.post("/attention/retry")
def attention_retry():
    return _bulk(*_group_args(request.form), dry_run=False)


def _bulk(merchant: str, step: str, key: str, *, dry_run: bool):
    result = actions.retry_group(_context(), merchant, step, key, dry_run=dry_run, operator=g.operator)
    if not result.found:
        flash(f"no returns of {merchant} are parked at {step} for that reason now")
        return redirect(url_for("pages.attention", merchant=merchant), code=303)
    return render_template("retry_group.html", result=result, merchant=merchant, step=step,
                           reason_key=key)


# --- shadow mode: how our decisions compare with what people did in Loop ---------------------------
@bp.get("/shadow")
def shadow_report():
    merchant = request.args.get("merchant") or None
    since_text = request.args.get("since") or ""
    with current_app.config["SESSIONS"]() as s:
        rows = shadow.shadow_returns(s, merchant=merchant, since=_since(since_text))
    return render_template("shadow.html", reports=shadow.agreement_report(rows), merchant=merchant,
                           since=since_text, merchants=sorted(current_app.config["MERCHANTS"]))


# The merchants pages add their routes to this blueprint (its login and CSRF check apply).
from . import merchant_pages  # noqa: E402,F401
