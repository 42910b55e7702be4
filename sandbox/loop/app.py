"""Flask app of the Loop sandbox: Loop's API under /api/<version>/ and sandbox controls under /_sim.

Section numbers (§) refer to docs/loop-api.md.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import threading
import time
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sandbox.common import (
    HTML_ERROR_PAGE,
    BadFaultRule,
    FaultBook,
    FaultRule,
    fault_after,
    fault_before,
)
from sandbox.loop.state import (
    NOT_FOUND,
    SCOPES,
    Clock,
    Dice,
    Invalid,
    ListQuery,
    Outcome,
    ReturnStore,
    Settings,
    encode_cursor,
    field_error,
    iso,
    parse_list_args,
    parse_time,
    shifted,
    validate_disposition,
)
from sandbox.loop.webhooks import Webhooks

VERSIONS = ("v1", "2026-07")  # v1 is an alias of 2026-07 (§1)
UNAUTHORIZED = {"error": {"code": "401", "http_code": "GEN-UNAUTHORIZED", "message": "Unauthorized."}}
TOO_MANY = {"message": "Too Many Attempts."}  # Loop documents no 429 body; this is Laravel's
NOT_IN_SHOP = {"errors": {"code": "NOT_AUTHORIZED", "message": "Line item does not belong to this shop."}}


def key_digest(key: str) -> str:
    """How stats name an API key: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class Gate:
    """API key check and the per-key rate limit (sliding window), counting what each turns away.

    The window is Loop's minute; a shorter `rate_limit_window_s` admits the same rate in
    proportionally fewer requests per window (tests use it to compress time).
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._hits: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
            self.rejected = {"unauthorized": 0, "rate_limited": 0}
            # Requests let through, by "METHOD route" (`make bench` counts Loop calls per return).
            self.admitted: collections.Counter[str] = collections.Counter()
            # ... and by API key (each key has its own limit), named by a digest, never the key.
            self.admitted_by_key: collections.Counter[str] = collections.Counter()

    def admit(self, key: str | None, route: str = "",
              scope: str = "returns") -> tuple[dict[str, Any], int, dict[str, str]] | None:
        """None to let the request through, else (body, status, headers) to answer with.

        A key without the route's scope gets the same 401 as a wrong key (§1)."""
        with self._lock:
            scopes = self._settings["api_key_scopes"].get(key, SCOPES) if key else ()
            if key not in self._settings["api_keys"] or scope not in scopes:
                self.rejected["unauthorized"] += 1
                return UNAUTHORIZED, 401, {}
            now = time.monotonic()
            window = self._settings["rate_limit_window_s"]
            hits = self._hits[key]
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= max(1, int(self._settings["rate_limit_per_minute"] * window / 60.0)):
                self.rejected["rate_limited"] += 1
                return TOO_MANY, 429, self._retry_after(hits[0] + window - now)
            hits.append(now)
            self.admitted[route] += 1
            self.admitted_by_key[key_digest(key)] += 1
            return None

    def _retry_after(self, wait_s: float) -> dict[str, str]:
        if not self._settings["rate_limit_retry_after"]:
            return {}
        return {"Retry-After": str(max(1, math.ceil(wait_s)))}


class LoopSandbox:
    """Everything one sandbox holds; the app keeps it in `app.extensions["loop_sandbox"]`."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = Settings(settings)
        self.clock = Clock()
        self.dice = Dice(self.settings)
        self.faults = FaultBook()
        self.gate = Gate(self.settings)
        self.webhooks = Webhooks(self.settings, self.dice)
        self.store = ReturnStore(self.settings, self.clock, self.dice, self.webhooks.emit)

    def reset(self) -> None:
        """Back to a fresh sandbox: no returns, subscriptions, deliveries or faults; initial settings."""
        self.settings.reset()
        self.clock.reset()
        self.faults.clear()
        self.gate.reset()
        self.store.reset()
        self.webhooks.reset()

    def stats(self) -> dict[str, Any]:
        with self.gate._lock:
            admitted, by_key = dict(self.gate.admitted), dict(self.gate.admitted_by_key)
        return {**self.store.stats(), **self.gate.rejected,
                "api_requests": {"total": sum(admitted.values()), "by_route": admitted, "by_key": by_key}}

    def shutdown(self) -> None:
        """Stop background work (processing timers, the delivery thread) so tests end cleanly."""
        self.store.shutdown()
        self.webhooks.shutdown()


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)  # the real APIs serve no /static
    app.json.sort_keys = False  # keep Loop's field order
    sandbox = LoopSandbox(settings)
    app.extensions["loop_sandbox"] = sandbox
    app.register_blueprint(_api(sandbox), url_prefix="/api/<version>")
    app.register_blueprint(_sim(sandbox), url_prefix="/_sim")
    app.register_error_handler(Invalid, lambda e: _json(e.body(), 422))
    app.register_error_handler(404, lambda e: _json(NOT_FOUND, 404))
    app.register_error_handler(405, lambda e: _json({"message": "Method not allowed."}, 405))
    app.register_error_handler(HTTPException, lambda e: _json({"message": f"{e.name}."}, e.code))
    return app


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _body() -> Any:
    """The JSON body whatever its Content-Type; None when there is none or it is not JSON."""
    try:
        return json.loads(request.get_data())
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None


def _outcome(outcome: Outcome | None) -> Response:
    return _json(NOT_FOUND, 404) if outcome is None else _json(outcome.body, outcome.status)


def _fault_answer(rule: FaultRule) -> Response | None:
    """Loop's answer for a fault rule's `status` (`code0` is RLM's and ignored here)."""
    if rule.status is None:
        return None
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
    if rule.html:
        return Response(HTML_ERROR_PAGE.format(status=rule.status), rule.status, headers, mimetype="text/html")
    body = TOO_MANY if rule.status == 429 else {"errors": {"code": "UNEXPECTED_ERROR", "message": "Server Error"}}
    return _json(body, rule.status, headers)


def _process_details() -> dict[str, Any] | None:
    """Process takes an optional flat object ("Additional Details", §3.3)."""
    if not request.get_data():
        return None
    body = _body()
    if not isinstance(body, dict) or any(isinstance(v, (dict, list)) for v in body.values()):
        raise field_error("body", "The request body must be a flat JSON object.")
    return body


def _page_url(q: ListQuery | None) -> str | None:
    """Absolute next/previous URL on the host the client called, with an opaque cursor."""
    if q is None:
        return None
    query = urlencode({"paginate": "true", "pageSize": q.size, "cursor": encode_cursor(q)})
    return f"{request.host_url}api/{g.api_version}/warehouse/return/list?{query}"


def _api(sb: LoopSandbox) -> Blueprint:
    api = Blueprint("loop_api", __name__)

    @api.url_value_preprocessor
    def pull_version(endpoint: str | None, values: dict[str, Any] | None) -> None:
        g.api_version = (values or {}).pop("version", None)

    @api.before_request
    def guard() -> Response | None:
        if g.api_version not in VERSIONS:
            return _json(NOT_FOUND, 404)
        relative = request.path.removeprefix(f"/api/{g.api_version}")
        rule = sb.faults.pick(request.method, [request.path, relative])
        if rule is not None and rule.after:
            g.after_fault = rule
        elif rule is not None and (faulted := fault_before(rule, sb.settings["timeout_hang_s"], _fault_answer)):
            return faulted
        route = f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"
        scope = "developer_tools" if relative.startswith("/webhooks") else "returns"
        refused = sb.gate.admit(request.headers.get("X-Authorization"), route, scope)
        return _json(*refused) if refused else None

    @api.after_request
    def fault_after_call(response: Response) -> Response:
        rule = g.pop("after_fault", None)
        if rule is None:
            return response
        return fault_after(rule, sb.settings["timeout_hang_s"], _fault_answer, response)

    @api.get("/warehouse/return/details")
    def details() -> Response:
        found = sb.store.details(request.args)
        return _json(found) if found else _json(NOT_FOUND, 404)

    @api.get("/warehouse/return/list")
    def list_returns() -> Response:
        q = parse_list_args(request.args, sb.clock.now())
        rows, next_q, prev_q = sb.store.list_page(q)
        if not q.paginate:
            return _json(rows)
        return _json({"returns": rows, "nextPageUrl": _page_url(next_q), "previousPageUrl": _page_url(prev_q)})

    @api.post("/warehouse/return/<int:return_id>/<any(process, flag, cancel, close):action>")
    def act(return_id: int, action: str) -> Response:
        data = _process_details() if action == "process" else None
        return _outcome(sb.store.act(return_id, action, data))

    @api.post("/warehouse/return/<int:return_id>/remove")
    def remove(return_id: int) -> Response:
        return _outcome(sb.store.remove(return_id, request.args.get("line_item_id")))

    @api.get("/warehouse/return/<int:return_id>/notes")
    def notes(return_id: int) -> Response:
        found = sb.store.notes(return_id)
        if found is None:
            return _json(NOT_FOUND, 404)
        return _json({"notes": found}) if found else _json("false", 422)

    @api.post("/warehouse/return/<int:return_id>/note")
    def add_note(return_id: int) -> Response:
        body = _body()
        content = body.get("content") if isinstance(body, dict) else request.form.get("content")
        return _outcome(sb.store.add_note(return_id, content))

    @api.post("/dispositioning/<any(grade, assess):kind>")
    def disposition(kind: str) -> Response:
        items = validate_disposition(_body(), kind)
        if not all(sb.store.knows_line_item(item["line_item_id"]) for item in items):
            return _json(NOT_IN_SHOP, 403)
        return _json(items)

    @api.get("/webhooks")
    def list_webhooks() -> Response:
        return _json({"webhooks": sb.webhooks.subscriptions.all()})

    @api.post("/webhooks")
    def create_webhook() -> Response:
        return _json(sb.webhooks.subscriptions.create(_body()))

    @api.put("/webhooks/<int:hook_id>")
    def update_webhook(hook_id: int) -> Response:
        if not sb.webhooks.subscriptions.update(hook_id, _body()):
            return _json(NOT_FOUND, 404)
        return Response(status=204)

    @api.delete("/webhooks/<int:hook_id>")
    def delete_webhook(hook_id: int) -> Response:
        if not sb.webhooks.subscriptions.delete(hook_id):
            return _json(NOT_FOUND, 404)
        return Response(status=204)

    return api


def _sim(sb: LoopSandbox) -> Blueprint:
    """Sandbox-only controls: no auth, never rate-limited, never faulted."""
    sim = Blueprint("loop_sim", __name__)

    @sim.post("/returns")
    def create_return() -> Response:
        return _json(sb.store.create(_body()), 201)

    @sim.post("/returns/<int:return_id>/state")
    def set_state(return_id: int) -> Response:
        body = _body()
        found = sb.store.admin_set_state(return_id, body.get("state") if isinstance(body, dict) else None)
        return _json(found) if found else _json(NOT_FOUND, 404)

    @sim.get("/returns/<int:return_id>")
    def internal(return_id: int) -> Response:
        found = sb.store.internal(return_id)
        return _json(found) if found else _json(NOT_FOUND, 404)

    @sim.get("/stats")
    def stats() -> Response:
        return _json(sb.stats())

    @sim.get("/deliveries")
    def deliveries() -> Response:
        return _json({"deliveries": sb.webhooks.dispatcher.deliveries()})

    @sim.get("/config")
    def get_config() -> Response:
        return _json(sb.settings.snapshot())

    @sim.post("/config")
    def set_config() -> Response:
        return _json(sb.settings.update(_body()))

    @sim.post("/faults")
    def add_faults() -> Response:
        """One rule, or {"rules": [...], "seed": N}; answers the rules now in force with their counters."""
        body = _body()
        if not isinstance(body, dict):
            raise Invalid("The request body must be a fault rule or {\"rules\": [...]}.")
        rule = {k: v for k, v in body.items() if k != "seed"}
        rules = body.get("rules", [rule] if rule else [])  # {"seed": N} alone adds no rule
        if not isinstance(rules, list) or ("rules" in body and set(body) - {"rules", "seed"}):
            raise field_error("rules", "Send one rule, or {\"rules\": [...]} with an optional seed.")
        try:
            sb.faults.add_all(rules, seed=body.get("seed"))
        except BadFaultRule as e:
            raise field_error(e.field, f"The {e.field} field {e.message}.") from None
        return _json({"rules": sb.faults.views()})

    @sim.delete("/faults")
    def clear_faults() -> Response:
        sb.faults.clear()
        return Response(status=204)

    @sim.post("/reset")
    def reset() -> Response:
        sb.reset()
        return _json({"reset": True})

    @sim.get("/clock")
    def get_clock() -> Response:
        return _json({"now": iso(sb.clock.now())})

    @sim.post("/clock")
    def set_clock() -> Response:
        body = _body()
        body = body if isinstance(body, dict) else {}
        if "set" in body:
            when = body["set"]
            try:
                sb.clock.set(parse_time(when if isinstance(when, str) else ""))
            except ValueError:
                raise field_error("set", "`set` must be an ISO 8601 time between 1970 and 9000.") from None
        elif "advance_s" in body:
            if shifted(sb.clock.now(), body["advance_s"]) is None:
                raise field_error("advance_s", "`advance_s` must be seconds that keep the clock between 1970 and 9000.")
            sb.clock.advance(body["advance_s"])
        else:
            raise Invalid("Send {\"set\": \"<ISO time>\"} or {\"advance_s\": <seconds>}.")
        return _json({"now": iso(sb.clock.now())})

    return sim
