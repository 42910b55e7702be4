"""Flask app serving the RLM sandbox: the company API (docs/rlm-api.md B.2–B.8) and `/_sim` controls (B.9)."""
from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from sandbox.common import (
    HTML_ERROR_PAGE,
    BadFaultRule,
    FaultBook,
    FaultRule,
    fault_after,
    fault_before,
)
from sandbox.rlm.state import (
    STATUSES,
    RlmState,
    SimError,
    bad_parameter,
    iso,
    parse_iso,
    shifted,
)

API_BASE = "/api/v1/companies/<int:company_number>"
DEFAULT_SETTINGS: dict[str, Any] = {
    "username": "demo",
    "key": "demo-rlm-key",
    "companies": {90: {}},  # number -> {"auto_transmit_on_create": bool, "preferred_warehouse": int|None}
    "ra_number_start": 3100,
    "timeout_hang_s": 90.0,  # how long a `"timeout": true` fault holds the answer
}
MAX_PAGE = 1000

api = Blueprint("rlm_api", __name__, url_prefix=API_BASE)
sim = Blueprint("rlm_sim", __name__, url_prefix="/_sim")


@dataclass
class Sandbox:
    """What one app instance holds: settings, state and fault rules."""

    settings: dict[str, Any]
    state: RlmState
    faults: FaultBook


def _sandbox() -> Sandbox:
    return current_app.extensions["rlm_sandbox"]


def load_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, overlaid with `settings`; with no settings, RLM_USERNAME / RLM_KEY from the env."""
    merged = dict(DEFAULT_SETTINGS)
    if settings is None:
        merged["username"] = os.environ.get("RLM_USERNAME", merged["username"])
        merged["key"] = os.environ.get("RLM_KEY", merged["key"])
    else:
        merged.update(settings)
    companies = merged["companies"]
    if isinstance(companies, (list, tuple)):
        companies = {number: {} for number in companies}
    merged["companies"] = {90: {}, **{int(number): dict(conf) for number, conf in companies.items()}}
    return merged


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    config = load_settings(settings)
    app = Flask(__name__, static_folder=None)  # the real APIs serve no /static
    app.json.sort_keys = False
    app.extensions["rlm_sandbox"] = Sandbox(
        settings=config,
        state=RlmState(companies=config["companies"], ra_number_start=config["ra_number_start"]),
        faults=FaultBook(),
    )
    app.register_blueprint(api)
    app.register_blueprint(sim)
    app.register_error_handler(SimError, _sim_error)
    app.register_error_handler(HTTPException, _http_error)
    app.before_request(_apply_due_auto_receives)
    return app


def _apply_due_auto_receives() -> None:
    """Auto-receive is lazy: any request (API or /_sim) lets due RAs get their receipt first."""
    _sandbox().state.tick()


# ----- responses and request parsing -----------------------------------------------------------------

def ok(http_status: int = 200, /, **fields: Any):
    return jsonify({"code": 1, "description": "Success", **fields}), http_status


def listing(data: list[dict], start_row: int = 1, limit_rows: int | None = None):
    """A list answer; `start_row` is 1-based (0 is taken as 1) like RLM's legacy paging."""
    first = max(start_row, 1) - 1
    page = data[first:first + limit_rows] if limit_rows is not None else data
    return ok(total_records=len(data), data=page)


def _sim_error(error: SimError):
    return jsonify({"code": 0, "description": error.description, **error.extra}), error.http_status


def _http_error(error: HTTPException):
    return jsonify({"code": 0, "description": HTTP_STATUS_CODES.get(error.code, "Error")}), error.code


def json_body(optional: bool = False) -> dict:
    raw = request.get_data(cache=True)
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise SimError(400, "Invalid JSON") from None
    if not isinstance(body, dict):
        raise SimError(400, "Invalid JSON")
    return body


def int_arg(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_parameter(name) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise bad_parameter(name)
    return number


def iso_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    if value is None:
        return None
    moment = parse_iso(value)
    if moment is None:
        raise bad_parameter(name)
    return moment


def paging() -> dict[str, int]:
    return {"start_row": int_arg("start_row", 1), "limit_rows": int_arg("limit_rows", 100, 1, MAX_PAGE)}


# ----- company API: stats, faults, auth -------------------------------------------------------------

@api.url_value_preprocessor
def _pop_company(endpoint, values):
    g.company_number = values.pop("company_number")


@api.before_request
def _guard():
    """Count, then apply faults (infrastructure fails before auth does), then auth and company.

    An `after` rule is only noted here: `_fault_after_call` applies it to the call's answer.
    """
    sandbox = _sandbox()
    sandbox.state.record_request(_pattern())
    rule = sandbox.faults.pick(request.method, [request.path, _relative_path()])
    if rule is not None and rule.after:
        g.after_fault = rule
    elif rule is not None and (answer := fault_before(rule, sandbox.settings["timeout_hang_s"], _fault_answer)):
        return answer
    _authenticate(sandbox.settings)
    sandbox.state.company(g.company_number)
    return None


@api.after_request
def _fault_after_call(response: Response) -> Response:
    rule = g.pop("after_fault", None)
    if rule is None:
        return response
    return fault_after(rule, _sandbox().settings["timeout_hang_s"], _fault_answer, response)


def _pattern() -> str:
    """`POST /return-authorizations/{ra}/transmit`: the route relative to the company base."""
    rule = request.url_rule.rule[len(API_BASE):] or "/"
    return f"{request.method} {rule.replace('<int:ra_number>', '{ra}')}"


def _relative_path() -> str:
    prefix = f"/api/v1/companies/{g.company_number}"
    return request.path[len(prefix):] or "/"


def _fault_answer(rule: FaultRule) -> Response | None:
    """RLM's answer for a rule's `status` (maybe an HTML page) or `code0` (HTTP 200 + code 0)."""
    if rule.status is None and rule.code0 is None:
        return None
    if rule.status is None:
        return current_app.make_response((jsonify({"code": 0, "description": rule.code0}), 200))
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
    if rule.html:
        body = HTML_ERROR_PAGE.format(status=rule.status)
        return Response(body, rule.status, {"Content-Type": "text/html; charset=utf-8", **headers})
    description = rule.code0 or HTTP_STATUS_CODES.get(rule.status, "Error")
    return current_app.make_response((jsonify({"code": 0, "description": description}), rule.status, headers))


def _authenticate(settings: dict[str, Any]) -> None:
    auth = request.authorization
    good = (auth is not None and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), settings["username"].encode())
            and hmac.compare_digest((auth.password or "").encode(), settings["key"].encode()))
    if not good:
        raise SimError(401, "The user/key combination does not exist")


# ----- company API: reference data and items -------------------------------------------------------

@api.get("/warehouses")
def warehouses():
    return listing(_sandbox().state.warehouses())


@api.get("/reason-codes")
def reason_codes():
    return listing(_sandbox().state.reason_codes())


@api.get("/divisions")
def divisions():
    return listing(_sandbox().state.divisions())


@api.get("/items")
def items():
    filters = {name: request.args.get(name) for name in ("upc", "style_number", "color", "size")}
    return listing(_sandbox().state.items(**filters), **paging())


# ----- company API: return authorizations -----------------------------------------------------------

@api.post("/return-authorizations")
def create_ra():
    ra, created = _sandbox().state.create_ra(g.company_number, json_body())
    return ok(201 if created else 200, **ra, replayed=not created)


@api.get("/return-authorizations")
def search_ras():
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise bad_parameter("status")
    found = _sandbox().state.search_ras(
        g.company_number, external_ref=request.args.get("external_ref"), status=status,
        customer_po=request.args.get("customer_po"), updated_since=iso_arg("updated_since"))
    return listing(found, **paging())


@api.get("/return-authorizations/<int:ra_number>")
def read_ra(ra_number: int):
    return ok(**_sandbox().state.get_ra(g.company_number, ra_number))


@api.patch("/return-authorizations/<int:ra_number>")
def patch_ra(ra_number: int):
    return ok(**_sandbox().state.patch_ra(g.company_number, ra_number, json_body()))


@api.post("/return-authorizations/<int:ra_number>/transmit")
def transmit(ra_number: int):
    ra = _sandbox().state.transmit(g.company_number, ra_number)
    return ok(ra_number=ra_number, status=ra["status"], **ra["asn"])


@api.post("/return-authorizations/<int:ra_number>/cancel")
def cancel(ra_number: int):
    json_body(optional=True)  # no fields, but malformed JSON is still a 400
    return ok(**_sandbox().state.cancel(g.company_number, ra_number))


@api.post("/return-authorizations/<int:ra_number>/close")
def close(ra_number: int):
    return ok(**_sandbox().state.close(g.company_number, ra_number, json_body()))


@api.get("/return-authorizations/<int:ra_number>/receipts")
def list_receipts(ra_number: int):
    return listing(_sandbox().state.list_receipts(g.company_number, ra_number))


@api.post("/return-authorizations/<int:ra_number>/receipts")
def post_receipt(ra_number: int):
    receipt, created = _sandbox().state.post_receipt(
        g.company_number, ra_number, json_body(), request.headers.get("Idempotency-Key"))
    return ok(201 if created else 200, **receipt, replayed=not created)


# ----- company API: feeds ---------------------------------------------------------------------------

@api.get("/receipts")
def receipt_feed():
    feed = _sandbox().state.receipt_feed(
        g.company_number, limit=int_arg("limit", 100, 1, MAX_PAGE),
        updated_since=iso_arg("updated_since"), cursor=request.args.get("cursor"))
    return ok(**feed)


@api.get("/events")
def events():
    feed = _sandbox().state.events(
        g.company_number, after_event_id=int_arg("after_event_id", 0), limit=int_arg("limit", 100, 1, MAX_PAGE))
    return ok(**feed)


# ----- /_sim controls (no auth, no faults) ------------------------------------------------------------

@sim.post("/companies/<int:company_number>/return-authorizations/<int:ra_number>/receive")
def sim_receive(company_number: int, ra_number: int):
    receipt, status, recorded = _sandbox().state.sim_receive(company_number, ra_number, json_body())
    # When the receipt was recorded, unrounded (`make bench` times from it); none posted, none.
    return ok(receipt=receipt, status=status, **({"recorded_at_s": recorded} if receipt else {}))


@sim.get("/config")
def get_config():
    return ok(**_sandbox().state.config())


@sim.post("/config")
def set_config():
    return ok(**_sandbox().state.configure(json_body()))


@sim.get("/faults")
def list_faults():
    return ok(data=_sandbox().faults.views())


@sim.post("/faults")
def add_fault():
    """`{"seed": N}` reseeds the rules' randomness; any other body is one fault rule."""
    body = json_body()
    faults = _sandbox().faults
    try:
        if "seed" in body:
            faults.add_all([], seed=body["seed"])
            return ok(seed=body["seed"])
        faults.add_all([body])
    except BadFaultRule as e:
        raise bad_parameter(e.field) from None
    return ok(201, rule=faults.views()[-1])


@sim.delete("/faults")
def clear_faults():
    _sandbox().faults.clear()
    return ok()


@sim.get("/clock")
def get_clock():
    clock = _sandbox().state.clock
    return ok(now=iso(clock.now()), frozen=clock.frozen)


@sim.post("/clock")
def set_clock():
    """`{"set": iso}` and/or `{"advance_s": n}`; `{"frozen": true}` stops time for exact assertions.

    All of it is checked before any of it is applied.
    """
    body = json_body()
    clock = _sandbox().state.clock
    start = clock.now()
    if "set" in body:
        start = parse_iso(body["set"]) if isinstance(body["set"], str) else None
        if start is None:
            raise bad_parameter("set")
    moment = shifted(start, body.get("advance_s", 0))
    if moment is None:
        raise bad_parameter("advance_s")
    if not isinstance(body.get("frozen", False), bool):
        raise bad_parameter("frozen")
    if "set" in body or "advance_s" in body:
        clock.set(moment)
    if "frozen" in body:
        clock.freeze(body["frozen"])
    _sandbox().state.tick()  # time moved: due auto-receives happen now
    return ok(now=iso(clock.now()), frozen=clock.frozen)


@sim.post("/reset")
def reset():
    """Wipe RAs, receipts, events, counters, runtime config and fault rules; reseed reference data."""
    sandbox = _sandbox()
    sandbox.state.reset()
    sandbox.faults.clear()
    return ok()


@sim.get("/stats")
def stats():
    rules = _sandbox().faults.views()
    return ok(**_sandbox().state.stats(), faults_fired=sum(rule["fired"] for rule in rules), fault_rules=rules)
