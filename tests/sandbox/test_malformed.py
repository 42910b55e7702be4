"""However malformed the request, both sandboxes answer as their API would: a 4xx in that API's
error shape (Loop `{"message", "errors"}` and its other bodies in docs/contracts.md; RLM
`{"code": 0, "description"}`), never a 500 and never an HTML page.

Every route is exercised, the `/_sim` controls too: wrong JSON types in any field of a near-valid
body, non-JSON bodies, odd methods, junk query parameters and path ids. Two kinds of test: sweeps
that try every odd value in every body field and query parameter (deterministic), and hypothesis
mixing them (`MALFORMED_EXAMPLES`, default 100 per test, raises the count for a longer hunt).
Requests go through Flask's test client (fast). Injected fault answers are not under test: the
sandbox is reset whenever a request changed something, so no rule a request adds stays in force.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.loop.app import create_app as create_loop_app
from sandbox.rlm import create_app as create_rlm_app

EXAMPLES = settings(max_examples=int(os.environ.get("MALFORMED_EXAMPLES", "100")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- odd values -------------------------------------------------------------------------------------

ODD_TEXT = ["", " ", "²", "٣", "-1", "0", "1.5", "1e309", "9" * 30, "9" * 5000, "NaN", "Infinity", "null", "true",
            "[]", "{}", "%00", "\x00", "é", "2024-13-45T99:99:99Z", "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59", "9999-12-31 23:59:59", "0001-01-01 00:00:00", "99991231", "20240230",
            "needs review", "GOOD", "exact", "return", "return.created", "LOOP_PROCESSED", "*"]
ODD_NUMBERS = [0, -1, 1, 2**31, 2**63, 10**30, 10**4000, 0.5, -0.0, 1e308, -1e308, math.nan, math.inf, -math.inf]
ODD_JSON = [None, True, False, 0, -1, 2**63, 10**30, 1e308, math.nan, math.inf, "", "²", "x" * 300,
            "9999-12-31T23:59:59-23:59", [], {}, [1, "a"], {"a": {"b": []}}]
scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(ODD_NUMBERS), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_TEXT), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def b64_json(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# Opaque cursors: junk, and base64 JSON of the wrong shape (what a decoder must survive).
ODD_CURSORS = ODD_TEXT + [b64_json(v) for v in ODD_JSON + [
    {"f": 10**20, "t": 0, "by": "id", "s": ["open"], "n": -5, "a": None, "b": None}, ["9999-12-31", "x"],
    ["2024-01-01T00:00:00Z", 10**30], {"f": 0, "t": -10**12, "by": "created_at", "s": 5, "n": 1, "a": 3, "b": [1]}]]
query_values = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12), st.integers().map(str))
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None]
RAW_BODIES = [b"", b"{", b"[1,", b"\xff\xfe", b"null", b'"true"', b"content=x&y", b"NaN", b"[]", b"1e999",
              b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b"9" * 5000]


def field_paths(value, prefix=()) -> list[tuple]:
    """Every key path into a JSON template (the places to put junk)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += field_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += field_paths(inner, (*prefix, index))
    return found


def with_value(template, path: tuple, value):
    """The template with `value` at `path` (the whole body when the path is empty)."""
    if not path:
        return value
    body = copy.deepcopy(template)
    *parents, last = path
    parent = body
    for key in parents:
        parent = parent[key]
    parent[last] = value
    return body


# --- one sandbox under test --------------------------------------------------------------------------

@dataclass
class Target:
    app: object
    auth: dict[str, str]
    fresh: Callable[[object], dict[str, list[str]]]  # reset and seed; the valid path values
    templates: dict[str, object]  # endpoint -> near-valid JSON body
    params: dict[str, list[str]]  # endpoint -> query parameters it reads
    error_shape: Callable[[object], bool]

    def routes(self, endpoints=None) -> list:
        return [rule for rule in self.app.url_map.iter_rules() if endpoints is None or rule.endpoint in endpoints]

    def path(self, rule, valid: dict[str, list[str]], pick=lambda options: options[0]) -> str:
        return re.sub(r"<(?:[^<>]*:)?(\w+)>", lambda m: pick(valid[m.group(1)]), rule.rule)

    def send(self, method: str, path: str, query: str = "", body: bytes | None = None,
             content_type: str | None = "application/json", headers: dict[str, str] | None = None):
        headers = dict(self.auth if headers is None else headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = self.app.test_client().open(path, method=method, query_string=query, data=body, headers=headers)
        check(method, response, self.error_shape)
        return response


def check(method: str, response, error_shape) -> None:
    what = f"{method} {response.request.path}?{response.request.query_string.decode()[:200]}"
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.get_data()[:300]!r}"
    if not response.get_data():
        assert method in ("HEAD", "OPTIONS") or response.status_code == 204, what
        return
    assert response.mimetype == "application/json", f"{what}: {response.get_data()[:200]!r}"
    body = json.loads(response.get_data())
    if response.status_code >= 400:
        assert error_shape(body), f"{what} -> {response.status_code}: {body!r}"


def own_method(rule) -> str:
    return min(rule.methods - {"HEAD", "OPTIONS"})


# --- Loop --------------------------------------------------------------------------------------------

LOOP_KEY = {"X-Authorization": "malformed-key"}
LINE_ITEM = {"sku": "CB11D10-BLUE-S", "price": "88.00", "discount": "1.00", "tax": "0.50", "barcode": "0999",
             "title": "Blouse", "return_reason": "Too small", "parent_return_reason": None, "outcome": "default"}
LOOP_TEMPLATES = {
    "loop_api.act": {"rlm_ra_number": "3105", "note": "x"},
    "loop_api.add_note": {"content": "Received"},
    "loop_api.disposition": [{"line_item_id": 293482039, "description": "ok", "condition_category": "grade_a",
                              "disposition_outcome": "donate", "return_processor": "me", "note": "n",
                              "images": ["https://x/1.png"], "inspected_at": "2024-03-31 23:59:59"}],
    "loop_api.create_webhook": {"topic": "return", "trigger": "return.created", "url": "https://example.com/h",
                                "status": "inactive"},
    "loop_api.update_webhook": {"topic": "label", "trigger": "label.updated", "url": "https://example.com/h",
                                "status": "inactive"},
    "loop_sim.create_return": {"order_name": "#1001", "shop_id": 1, "currency": "USD",
                               "customer": {"email": "a@example.com", "first_name": "A", "last_name": "B"},
                               "address": {"state": "NY", "zip": "11201", "city": "Brooklyn"},
                               "line_items": [LINE_ITEM, dict(LINE_ITEM, outcome="exchange")]},
    "loop_sim.set_state": {"state": "review"},
    "loop_sim.set_config": {"process_delay_s": {"min_s": 1, "median_s": 2, "max_s": 3}, "seed": 1,
                            "processing_fails": {"52393555": 1}, "processing_failure_rate": 0.5,
                            "webhook_delay": {"probability": 0.5, "min_s": 0, "max_s": 1}, "refusal_status": 422,
                            "api_keys": ["malformed-key"], "rate_limit_window_s": 60, "timeout_hang_s": 1},
    "loop_sim.add_faults": {"rules": [{"match": {"method": "POST", "path": "/webhooks"}, "status": 503,
                                      "after": True, "times": 1, "probability": 0.5}], "seed": 1},
    "loop_sim.set_clock": {"set": "2024-01-01T00:00:00Z", "advance_s": 10},
}
LOOP_PARAMS = {
    "loop_api.details": ["return_id", "order_id", "order_name", "currency_type"],
    "loop_api.list_returns": ["from", "to", "filter", "state", "paginate", "pageSize", "cursor"],
    "loop_api.remove": ["line_item_id"],
}


def loop_error_shape(body) -> bool:
    """Loop's error bodies: message/errors (422, 404, 405, 429), error (401, remove), content, "false" (notes)."""
    if body == "false":
        return True
    return isinstance(body, dict) and (
        isinstance(body.get("message"), str) or isinstance(body.get("errors"), dict)
        or isinstance(body.get("error"), dict) or isinstance(body.get("content"), str))


def fresh_loop(app) -> dict[str, list[str]]:
    """Reset, then one return with a note and one subscription: the ids a request may name."""
    client = app.test_client()
    client.post("/_sim/reset")
    ret = client.post("/_sim/returns", json={"order_name": "#1", "line_items": [LINE_ITEM] * 2}).get_json()
    client.post(f"/api/v1/warehouse/return/{ret['id']}/note", json={"content": "n"}, headers=LOOP_KEY)
    hook = client.post("/api/v1/webhooks", headers=LOOP_KEY, json=LOOP_TEMPLATES["loop_api.create_webhook"])
    return {"version": ["v1", "2026-07"], "return_id": [str(ret["id"])], "hook_id": [str(hook.get_json()["id"])],
            "action": ["process", "flag", "cancel", "close"], "kind": ["grade", "assess"]}


# --- RLM ---------------------------------------------------------------------------------------------

RLM_AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-rlm-key").decode()}
RA_LINE = {"line_number": 1, "upc": "099999000054", "sku_number": 4, "style_number": "CB11D10", "color": "BLUE",
           "size": "S", "qty_authorized": 2, "unit_price": "88.00", "reason_code": "TOO_SMALL", "reason_note": "n",
           "description": "d", "external_line_refs": ["1", "2"]}
RECEIPT_LINE = {"ra_line_number": 1, "upc": "099999000054", "qty_received": 1, "condition": "GOOD",
                "disposition": "RESTOCK", "note": "n"}
RLM_TEMPLATES = {
    "rlm_api.create_ra": {"division_number": 10, "warehouse_number": 1, "customer_number": "WEB0000",
                          "customer_po": "#1001", "external_ref": "new", "external_source": "LOOP",
                          "ra_date": 20240312, "expiration_date": 20240412, "store_number": 1,
                          "original_order_number": 7, "carrier": "UPS", "tracking_number": "1Z", "notes": "n",
                          "special01": "s", "ship_from": {"name": "Jane", "state": "NY", "country_code": "USA"},
                          "lines": [RA_LINE, dict(RA_LINE, line_number=2, upc=None, size="M")]},
    "rlm_api.patch_ra": {"carrier": "UPS", "tracking_number": "1Z", "notes": "n", "lines": [RA_LINE]},
    "rlm_api.close": {"close_reason": "LOOP_PROCESSED", "note": "done"},
    "rlm_api.cancel": {},
    "rlm_api.post_receipt": {"lines": [RECEIPT_LINE, {"style_number": "KT200", "color": "NAVY", "size": "M",
                                                      "qty_received": 1, "condition": "DAMAGED"}],
                             "received_at": "2024-03-20T12:00:00Z", "source": "3PL", "tracking_number": "1Z"},
    "rlm_sim.sim_receive": {"scenario": "exact", "lines": [RECEIPT_LINE]},
    "rlm_sim.set_config": {"company_number": 90, "auto_transmit_on_create": True,
                           "auto_receive": {"scenario": "exact", "after_s": 1}},
    "rlm_sim.add_fault": {"match": {"method": "POST", "path": "/items"}, "status": 503, "after": True, "times": 1,
                          "code0": "x", "latency_ms": 0, "probability": 0.5, "retry_after": 1},
    "rlm_sim.set_clock": {"set": "2024-03-20T12:00:00Z", "advance_s": 10, "frozen": True},
}
RLM_PARAMS = {
    "rlm_api.items": ["upc", "style_number", "color", "size", "start_row", "limit_rows"],
    "rlm_api.search_ras": ["external_ref", "status", "customer_po", "updated_since", "start_row", "limit_rows"],
    "rlm_api.receipt_feed": ["limit", "updated_since", "cursor"],
    "rlm_api.events": ["after_event_id", "limit"],
}


def rlm_error_shape(body) -> bool:
    return isinstance(body, dict) and body.get("code") == 0 and isinstance(body.get("description"), str)


def fresh_rlm(app) -> dict[str, list[str]]:
    """Reset, then an open RA (3100) and a transmitted one with a receipt (3101)."""
    client = app.test_client()
    client.post("/_sim/reset")
    base = "/api/v1/companies/90/return-authorizations"
    for ref in ("open", "sent"):
        client.post(base, json=dict(RLM_TEMPLATES["rlm_api.create_ra"], external_ref=ref), headers=RLM_AUTH)
    client.post(f"{base}/3101/transmit", headers=RLM_AUTH)
    client.post(f"{base}/3101/receipts", json={"lines": [RECEIPT_LINE]}, headers=RLM_AUTH)
    return {"company_number": ["90", "91"], "ra_number": ["3100", "3101"]}


@pytest.fixture(scope="module", params=["loop", "rlm"])
def target(request):
    if request.param == "rlm":
        yield Target(create_rlm_app({"companies": {91: {"preferred_warehouse": 1}}}), RLM_AUTH, fresh_rlm,
                     RLM_TEMPLATES, RLM_PARAMS, rlm_error_shape)
        return
    app = create_loop_app({"api_keys": ["malformed-key"], "rate_limit_per_minute": 1_000_000,
                           "process_delay_s": 600.0})
    yield Target(app, LOOP_KEY, fresh_loop, LOOP_TEMPLATES, LOOP_PARAMS, loop_error_shape)
    app.extensions["loop_sandbox"].shutdown()


# --- sweeps: every odd value in every place ------------------------------------------------------------

def test_every_body_field_with_every_odd_value(target):
    valid = target.fresh(target.app)
    for rule in target.routes(target.templates):
        template = target.templates[rule.endpoint]
        for place in field_paths(template):
            for value in ODD_JSON:
                body = json.dumps(with_value(template, place, value)).encode()
                if target.send(own_method(rule), target.path(rule, valid), body=body).status_code < 300:
                    valid = target.fresh(target.app)  # it changed something: start again from the seed


def test_every_query_parameter_with_every_odd_value(target):
    valid = target.fresh(target.app)
    for rule in target.routes(target.params):
        for name in target.params[rule.endpoint]:
            for value in ODD_CURSORS if name == "cursor" else ODD_TEXT:
                target.send(own_method(rule), target.path(rule, valid), query=urlencode({name: value}))


def test_every_route_with_odd_methods_raw_bodies_and_ids(target):
    valid = target.fresh(target.app)
    odd_ids = {name: ["0", str(2**64), "9" * 5000, "-1", "x", quote("²")] for name in valid}
    for rule in target.routes():
        for method in METHODS:
            target.send(method, target.path(rule, valid))
        for raw in RAW_BODIES:
            for content_type in CONTENT_TYPES:
                target.send(own_method(rule), target.path(rule, valid), body=raw, content_type=content_type)
        target.send(own_method(rule), target.path(rule, valid), headers={})  # no credentials
        for odd in zip(*odd_ids.values(), strict=True):
            target.send(own_method(rule), target.path(rule, dict(zip(valid, ([o] for o in odd), strict=True))))
        valid = target.fresh(target.app)


def test_every_route_with_a_body_has_a_template(target):
    """So a new route is swept with near-valid bodies too, not only with raw ones."""
    writes = {r.endpoint for r in target.routes() if r.methods & {"POST", "PUT", "PATCH"}}
    no_body = {"loop_sim.reset", "rlm_sim.reset", "loop_api.remove", "rlm_api.transmit"}
    assert writes - no_body <= set(target.templates)


# --- hypothesis: odd values combined ---------------------------------------------------------------------

def junk_body(template, data):
    """Junk in a few places of the template, or a random JSON value."""
    if template is None or data.draw(st.integers(0, 4)) == 0:
        return data.draw(json_values)
    body = template
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from(field_paths(body)))
        body = with_value(body, place, data.draw(json_values))
    return body


@EXAMPLES
@given(data=st.data())
def test_any_request_mixing_odd_parts(target, data):
    valid = target.fresh(target.app)
    rule = data.draw(st.sampled_from(target.routes()))
    method = data.draw(st.sampled_from([own_method(rule)] * 3 + METHODS))
    path = target.path(rule, valid, lambda options: data.draw(st.sampled_from(options)))
    names = target.params.get(rule.endpoint, []) + ["x"]
    query = {name: data.draw(st.sampled_from(ODD_CURSORS) if name == "cursor" else query_values)
             for name in data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True))}
    body = junk_body(target.templates.get(rule.endpoint), data)
    target.send(method, path, query=urlencode(query), body=json.dumps(body).encode())
