"""The Loop sandbox follows docs/loop-api.md, quirks included: one test per rule."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from sandbox.common import ServerThread
from sandbox.loop.app import create_app

KEY = "test-key"
AUTH = {"X-Authorization": KEY}
SECRET = "test-secret"
API = "/api/v1"


@pytest.fixture
def make_app():
    apps = []

    def make(**settings):
        settings = {"api_keys": [KEY], "webhook_secret": SECRET, "process_delay_s": 0.05,
                    "webhook_retry_base_s": 0.05, "webhook_timeout_s": 2.0, **settings}
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["loop_sandbox"].shutdown()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def subscribe(client, url, *triggers):
    for trigger in triggers:
        topic = trigger.rsplit(".", 1)[0]
        resp = client.post(f"{API}/webhooks", headers=AUTH,
                           json={"topic": topic, "trigger": trigger, "url": url, "status": "active"})
        assert resp.status_code == 200, resp.get_json()


def new_return(client, units=2, **spec):
    body = {"order_name": "#1001", "line_items": [
        {"sku": "CB11D10-BLUE-S", "barcode": "099999000054", "title": "Cotton Blouse - Blue / S",
         "price": "88.00", "return_reason": "Too small", "parent_return_reason": "Didn't fit"}] * units, **spec}
    resp = client.post("/_sim/returns", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def set_state(client, return_id, state):
    assert client.post(f"/_sim/returns/{return_id}/state", json={"state": state}).status_code == 200


def state_of(client, return_id):
    return client.get(f"/_sim/returns/{return_id}").get_json()["state"]


def wait_state(client, return_id, state, timeout=3.0):
    deadline = time.monotonic() + timeout
    while state_of(client, return_id) != state and time.monotonic() < deadline:
        time.sleep(0.01)
    return state_of(client, return_id)


def idle(app):
    assert app.extensions["loop_sandbox"].webhooks.dispatcher.wait_idle(10)


def deliveries(client):
    return client.get("/_sim/deliveries").get_json()["deliveries"]


# --- auth, rate limit, versions -------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-Authorization": "nope"}, {"X-Authorization": f"Bearer {KEY}"},
                                     {"Authorization": KEY}])
def test_missing_or_bad_key_is_401_with_odd_body(client, headers):
    resp = client.get(f"{API}/webhooks", headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": {"code": "401", "http_code": "GEN-UNAUTHORIZED",
                                         "message": "Unauthorized."}}


def test_rate_limit_per_key_then_429(make_app):
    client = make_app(rate_limit_per_minute=3, rate_limit_retry_after=True, api_keys=[KEY, "other"]).test_client()
    assert [client.get(f"{API}/webhooks", headers=AUTH).status_code for _ in range(3)] == [200] * 3
    limited = client.get(f"{API}/webhooks", headers=AUTH)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.get(f"{API}/webhooks", headers={"X-Authorization": "other"}).status_code == 200
    assert all(client.get("/_sim/stats").status_code == 200 for _ in range(5))  # /_sim is never limited
    assert client.get("/_sim/stats").get_json()["rate_limited"] == 1


UNAUTHORIZED = {"error": {"code": "401", "http_code": "GEN-UNAUTHORIZED", "message": "Unauthorized."}}


def test_a_key_without_a_scope_gets_the_same_401_on_that_scopes_routes(make_app):
    client = make_app(api_keys=[KEY, "hooks-only", "returns-only"],
                      api_key_scopes={"hooks-only": ["developer_tools"], "returns-only": ["returns"]}).test_client()
    returns = f"{API}/warehouse/return/list"
    for key in (KEY, "returns-only"):  # a key not named in api_key_scopes has both scopes
        assert client.get(returns, headers={"X-Authorization": key}).status_code == 200
    for key in (KEY, "hooks-only"):
        assert client.get(f"{API}/webhooks", headers={"X-Authorization": key}).status_code == 200
    for key, path in (("hooks-only", returns), ("hooks-only", f"{API}/dispositioning/grade"),
                      ("returns-only", f"{API}/webhooks")):
        method = client.post if path.endswith("grade") else client.get
        refused = method(path, headers={"X-Authorization": key})
        assert (refused.status_code, refused.get_json()) == (401, UNAUTHORIZED), (key, path)
    assert client.get("/_sim/stats").get_json()["unauthorized"] == 3
    bad = client.post("/_sim/config", json={"api_key_scopes": {KEY: ["orders"]}})
    assert bad.status_code == 422 and "api_key_scopes" in bad.get_json()["errors"]


def test_both_versions_served_and_others_404(client):
    assert client.get("/api/2026-07/webhooks", headers=AUTH).status_code == 200
    assert client.get(f"{API}/webhooks", headers=AUTH).status_code == 200
    assert client.get("/api/v2/webhooks", headers=AUTH).get_json() == {"errors": {"code": "NOT_FOUND"}}


# --- details --------------------------------------------------------------------------------------

def test_details_integer_ids_naive_timestamps_and_unit_lines(client):
    created = new_return(client, address={"state": "NY", "zip": "11201"})
    for query in (f"return_id={created['id']}", f"order_id={created['order_id']}", "order_name=%231001"):
        resp = client.get(f"{API}/warehouse/return/details?{query}", headers=AUTH)
        assert resp.status_code == 200
        ret = resp.get_json()
        assert ret["id"] == created["id"]
    assert all(isinstance(ret[k], int) for k in ("id", "order_id", "provider_order_id", "shop_id"))
    assert len(ret["created_at"]) == 19 and ret["created_at"][10] == " "  # 2023-08-22 14:08:31
    assert ret["edited_at"] is None and ret["state"] == "open"
    assert (ret["total"], ret["return_total"], ret["refund"]) == ("176.00", "176.00", "176.00")
    assert ret["customer"] == ret["customer_detail"]["email"]
    assert ret["address"]["state"] == "New York" and ret["address"]["zip"] == "11201"
    label_fields = (ret["labels"], ret["carrier"], ret["tracking_number"], ret["label_status"])
    assert label_fields == ([], "", "N/A", "pending")
    first, second = ret["line_items"]
    assert first["line_item_id"] != second["line_item_id"] and isinstance(first["line_item_id"], int)
    assert first["provider_line_item_id"] == second["provider_line_item_id"]  # two units of one Shopify line
    assert first["price"] == "88.00" and first["exchange_variant"] == "" and "quantity" not in first


def test_details_unknown_is_404_and_missing_param_422(client):
    resp = client.get(f"{API}/warehouse/return/details?return_id=999", headers=AUTH)
    assert (resp.status_code, resp.get_json()) == (404, {"errors": {"code": "NOT_FOUND"}})
    resp = client.get(f"{API}/warehouse/return/details", headers=AUTH)
    assert resp.status_code == 422 and set(resp.get_json()) == {"message", "errors"}


# --- list -----------------------------------------------------------------------------------------

def list_returns(client, **params):
    return client.get(f"{API}/warehouse/return/list", headers=AUTH, query_string=params)


def test_list_default_window_is_last_24_hours(client):
    client.post("/_sim/clock", json={"set": "2024-03-10T12:00:00Z"})
    old = new_return(client)
    client.post("/_sim/clock", json={"advance_s": 25 * 3600})
    fresh = new_return(client)
    assert [r["id"] for r in list_returns(client).get_json()] == [fresh["id"]]
    both = list_returns(client, **{"from": "2024-03-10 00:00:00", "to": "2024-03-12T00:00:00.000Z"})
    assert [r["id"] for r in both.get_json()] == [old["id"], fresh["id"]]


def test_list_span_over_120_days_and_bad_params_are_422(client):
    assert list_returns(client, **{"from": "2024-01-01 00:00:00", "to": "2024-04-30 00:00:00"}).status_code == 200
    resp = list_returns(client, **{"from": "2024-01-01 00:00:00", "to": "2024-05-01 00:00:01"})
    assert resp.status_code == 422 and set(resp.get_json()) == {"message", "errors"}
    for bad in ({"filter": "deleted_at"}, {"state": "processed"}, {"from": "yesterday"}, {"paginate": "maybe"}):
        resp = list_returns(client, **bad)
        assert resp.status_code == 422 and resp.get_json()["errors"], bad


def test_list_default_states_skip_review_and_cancelled(client):
    ids = {state: new_return(client)["id"] for state in ("open", "review", "cancelled", "closed", "expired")}
    for state, return_id in ids.items():
        if state != "open":
            set_state(client, return_id, state)
    listed = {r["id"] for r in list_returns(client).get_json()}
    assert listed == {ids["open"], ids["closed"], ids["expired"]}
    assert [r["id"] for r in list_returns(client, state="review").get_json()] == [ids["review"]]
    assert [r["id"] for r in list_returns(client, state="needs review").get_json()] == [ids["review"]]


def test_list_filter_updated_at(client):
    client.post("/_sim/clock", json={"set": "2024-03-10T12:00:00Z"})
    ret = new_return(client)
    client.post("/_sim/clock", json={"advance_s": 2 * 86400})
    client.post(f"{API}/warehouse/return/{ret['id']}/flag", headers=AUTH)
    assert list_returns(client, state="review").get_json() == []
    assert [r["id"] for r in list_returns(client, state="review", filter="updated_at").get_json()] == [ret["id"]]


def test_list_paginate_false_is_bare_array_true_is_page_object(client):
    new_return(client)
    assert isinstance(list_returns(client).get_json(), list)
    assert isinstance(list_returns(client, paginate="false").get_json(), list)
    page = list_returns(client, paginate="true").get_json()
    assert set(page) >= {"returns", "nextPageUrl", "previousPageUrl"}
    assert len(page["returns"]) == 1 and page["nextPageUrl"] is None and page["previousPageUrl"] is None


def test_list_cursor_followed_to_the_end(client):
    ids = [new_return(client)["id"] for _ in range(7)]
    seen, pages = [], []
    page = list_returns(client, paginate="true", pageSize=3).get_json()
    while True:
        pages.append(page)
        seen += [r["id"] for r in page["returns"]]
        if not page["nextPageUrl"]:
            break
        url = urlsplit(page["nextPageUrl"])
        assert url.scheme == "http" and url.netloc == "localhost" and "cursor=" in url.query  # absolute
        page = client.get(f"{url.path}?{url.query}", headers=AUTH).get_json()
    assert seen == ids and [len(p["returns"]) for p in pages] == [3, 3, 1]
    assert pages[0]["previousPageUrl"] is None and pages[1]["previousPageUrl"]
    back = urlsplit(pages[2]["previousPageUrl"])
    previous = client.get(f"{back.path}?{back.query}", headers=AUTH).get_json()
    assert [r["id"] for r in previous["returns"]] == ids[3:6]
    assert list_returns(client, cursor="garbage").status_code == 422


def test_list_next_page_url_uses_request_host_over_real_http(app):
    server = ServerThread(app).start()
    try:
        for _ in range(2):
            requests.post(f"{server.url}/_sim/returns",
                          json={"order_name": "#1", "line_items": [{"sku": "A", "price": 1}]})
        page = requests.get(f"{server.url}{API}/warehouse/return/list",
                            params={"paginate": "true", "pageSize": 1}, headers=AUTH).json()
        assert page["nextPageUrl"].startswith(f"{server.url}{API}/warehouse/return/list?")
        last = requests.get(page["nextPageUrl"], headers=AUTH).json()
        assert len(last["returns"]) == 1 and last["nextPageUrl"] is None
    finally:
        server.stop()


def test_list_page_size_750_ok_751_refused(client):
    assert list_returns(client, paginate="true", pageSize=750).status_code == 200
    resp = list_returns(client, paginate="true", pageSize=751)
    assert resp.status_code == 422 and "pageSize" in resp.get_json()["errors"]


# --- actions and refusals -------------------------------------------------------------------------

CLOSED = {"errors": {"message": "Return is closed and therefore cannot be processed.",
                     "code": "UNPROCESSABLE_RETURN"}}
EXPIRED = {"errors": {"message": "Return is expired and therefore cannot be processed.",
                      "code": "UNPROCESSABLE_RETURN"}}
CANCELLED = {"message": "Return is cancelled and therefore cannot be processed."}
REVIEW = {"message": "Return is review and therefore cannot be processed."}
FLAGGED = {"errors": {"message": "Return is flagged and therefore cannot be processed.",
                      "code": "UNPROCESSABLE_FLAGGED_RETURN"}}

STATE_MACHINE = [
    ("open", "flag", "true", "review"), ("open", "cancel", "true", "cancelled"),
    ("open", "close", "true", "closed"),
    ("review", "close", "true", "closed"), ("review", "process", FLAGGED, "review"),
    ("review", "flag", REVIEW, "review"),
    ("review", "cancel", {"content": "Return is flagged and cannot be processed."}, "review"),
    ("expired", "cancel", {"content": "Return is expired and cannot be processed."}, "expired"),
    ("expired", "process", EXPIRED, "expired"), ("expired", "close", EXPIRED, "expired"),
    ("closed", "process", CLOSED, "closed"), ("closed", "flag", CLOSED, "closed"),
    ("closed", "cancel", CLOSED, "closed"), ("closed", "close", CLOSED, "closed"),
    ("cancelled", "process", CANCELLED, "cancelled"), ("cancelled", "close", CANCELLED, "cancelled"),
]


@pytest.mark.parametrize(("start", "action", "body", "end"), STATE_MACHINE)
def test_action_state_machine_answers_http_200(client, start, action, body, end):
    ret = new_return(client)
    if start != "open":
        set_state(client, ret["id"], start)
    resp = client.post(f"{API}/warehouse/return/{ret['id']}/{action}", headers=AUTH)
    assert (resp.status_code, resp.get_json()) == (200, body)
    assert state_of(client, ret["id"]) == end


def test_refusals_as_422_with_the_switch(make_app):
    client = make_app(refusal_status=422).test_client()
    ret = new_return(client)
    set_state(client, ret["id"], "closed")
    resp = client.post(f"{API}/warehouse/return/{ret['id']}/flag", headers=AUTH)
    assert (resp.status_code, resp.get_json()) == (422, CLOSED)
    assert client.post(f"{API}/warehouse/return/999/flag", headers=AUTH).status_code == 404


def test_process_queues_then_closes_with_webhooks(app, client, receiver):
    subscribe(client, receiver.url(), "return.updated", "return.closed")
    ret = new_return(client)
    resp = client.post(f"{API}/warehouse/return/{ret['id']}/process", headers=AUTH, json={"rlm_ra_number": "3105"})
    assert resp.get_json() == "true"
    assert state_of(client, ret["id"]) == "open"  # only queued
    assert wait_state(client, ret["id"], "closed") == "closed"
    hits = receiver.wait_for(2)
    assert [(p["trigger"], p["state"]) for p in receiver.payloads()] == [
        ("return.updated", "closed"), ("return.closed", "closed")]
    internal = client.get(f"/_sim/returns/{ret['id']}").get_json()
    assert internal["process_data"] == {"rlm_ra_number": "3105"} and internal["refunds"][0]["amount"] == "176.00"
    assert [a["action"] for a in internal["actions"]] == ["process"] and hits


def test_processing_failure_sends_failed_webhook_and_keeps_state(make_app, receiver):
    app = make_app()
    client = app.test_client()
    subscribe(client, receiver.url(), "return.processing.failed", "return.updated")
    ret = new_return(client)
    client.post("/_sim/config", json={"processing_fails": [ret["id"]]})
    assert client.post(f"{API}/warehouse/return/{ret['id']}/process", headers=AUTH).get_json() == "true"
    receiver.wait_for(1)
    time.sleep(0.1)
    payload = receiver.payloads()
    assert len(payload) == 1 and payload[0]["trigger"] == "return.processing.failed"
    assert payload[0]["topic"] == "return.processing" and int(payload[0]["return_id"]) == ret["id"]
    assert payload[0]["return_state"] == "open" and state_of(client, ret["id"]) == "open"


def test_flagged_process_refused_unless_toggle(client):
    ret = new_return(client)
    set_state(client, ret["id"], "review")
    assert client.post(f"{API}/warehouse/return/{ret['id']}/process", headers=AUTH).get_json() == FLAGGED
    client.post("/_sim/config", json={"allow_flagged_process": True})
    assert client.post(f"{API}/warehouse/return/{ret['id']}/process", headers=AUTH).get_json() == "true"
    assert wait_state(client, ret["id"], "closed") == "closed"
    stats = client.get("/_sim/stats").get_json()
    assert stats["returns"][str(ret["id"])]["process"] == 1 and stats["totals"]["refused"] == 1


def test_notes_rules(client):
    ret = new_return(client)
    url = f"{API}/warehouse/return/{ret['id']}"
    resp = client.get(f"{url}/notes", headers=AUTH)
    assert (resp.status_code, resp.get_json()) == (422, "false")
    refusal = {"errors": {"message": "Content is required and must be less than 255 characters."}}
    for bad in ({"content": "x" * 255}, {"content": ""}, {}):
        resp = client.post(f"{url}/note", headers=AUTH, json=bad)
        assert (resp.status_code, resp.get_json()) == (422, refusal)
    assert client.post(f"{url}/note", headers=AUTH, json={"content": "x" * 254}).get_json() == "true"
    notes = client.get(f"{url}/notes", headers=AUTH).get_json()["notes"]
    assert len(notes) == 1 and isinstance(notes[0]["id"], int) and notes[0]["created_at"].endswith("Z")


def test_remove_line_items_bodies(client):
    ret = new_return(client, units=3)
    ids = [li["line_item_id"] for li in ret["line_items"]]
    url = f"{API}/warehouse/return/{ret['id']}/remove"
    expected = [
        ("", {"error": {"message": "The line item id field is required."}}),
        ("?line_item_id=1,2", {"message": "There are no line items that qualify for removal"}),
        (f"?line_item_id={ids[0]},1", {"message": "Not all line items qualify for removal"}),
    ]
    for query, body in expected:
        resp = client.post(url + query, headers=AUTH)
        assert (resp.status_code, resp.get_json()) == (422, body)
    assert client.post(f"{url}?line_item_id={ids[0]},{ids[1]}", headers=AUTH).get_json() == "true"
    details = client.get(f"{API}/warehouse/return/details?return_id={ret['id']}", headers=AUTH).get_json()
    assert [li["line_item_id"] for li in details["line_items"]] == [ids[2]] and details["edited_at"]
    assert wait_state(client, ret["id"], "closed") == "closed"  # the rest is processed
    resp = client.post(f"{url}?line_item_id={ids[2]}", headers=AUTH)
    assert (resp.status_code, resp.get_json()) == (422, {"message": "Return cannot be modified."})


def test_grade_and_assess_echo_and_validate(client):
    line_id = new_return(client)["line_items"][0]["line_item_id"]
    grade = [{"line_item_id": line_id, "description": "fine", "condition_category": "grade_a",
              "inspected_at": "2024-03-31 23:59:59"}]
    assert client.post(f"{API}/dispositioning/grade", headers=AUTH, json=grade).get_json() == grade
    bad = client.post(f"{API}/dispositioning/grade", headers=AUTH, json=[{"line_item_id": line_id}])
    assert bad.status_code == 422 and "0.description" in bad.get_json()["errors"]
    assess = [{"line_item_id": line_id, "disposition_outcome": "back_to_stock"}]
    assert client.post(f"{API}/dispositioning/assess", headers=AUTH, json=assess).get_json() == assess
    foreign = client.post(f"{API}/dispositioning/assess", headers=AUTH,
                          json=[{"line_item_id": 1, "disposition_outcome": "donate"}])
    assert foreign.status_code == 403


# --- webhook subscriptions ------------------------------------------------------------------------

def test_webhook_subscription_crud_rules(client):
    hooks = f"{API}/webhooks"
    body = {"topic": "return", "trigger": "return.created", "url": "https://example.com/loop"}
    created = client.post(hooks, headers=AUTH, json=body)
    assert created.status_code == 200
    hook = created.get_json()
    assert hook["status"] == "inactive" and set(hook) == {"id", "shop_id", "topic", "trigger", "url", "status"}
    duplicate = client.post(hooks, headers=AUTH, json={**body, "status": "active"})
    assert duplicate.status_code == 422
    bad_topic = client.post(hooks, headers=AUTH, json={**body, "topic": "giftcard"})
    assert (bad_topic.status_code, bad_topic.get_json()) == (
        422, {"message": "Must be one of the following values:return,label,restock", "errors": {}})
    assert client.post(hooks, headers=AUTH, json={**body, "trigger": "label.created"}).status_code == 422
    put = client.put(f"{hooks}/{hook['id']}", headers=AUTH, json={**body, "status": "active"})
    assert put.status_code == 204 and put.data == b""
    assert client.get(hooks, headers=AUTH).get_json()["webhooks"][0]["status"] == "active"
    assert client.put(f"{hooks}/{hook['id']}", headers=AUTH, json={"topic": "return"}).status_code == 422
    assert client.put(f"{hooks}/999", headers=AUTH, json=body).status_code == 404
    assert client.delete(f"{hooks}/{hook['id']}", headers=AUTH).status_code == 204
    gone = client.delete(f"{hooks}/{hook['id']}", headers=AUTH)
    assert (gone.status_code, gone.get_json()) == (404, {"errors": {"code": "NOT_FOUND"}})


def test_a_refused_topic_is_422_and_the_other_topics_still_subscribe(make_app):
    client = make_app(refused_topics=["return.processing"]).test_client()
    hooks = f"{API}/webhooks"
    body = {"topic": "return.processing", "trigger": "return.processing.failed",
            "url": "https://example.com/loop", "status": "active"}
    refused = client.post(hooks, headers=AUTH, json=body)
    assert (refused.status_code, refused.get_json()) == (
        422, {"message": "Must be one of the following values:return,label,restock", "errors": {}})
    ok = client.post(hooks, headers=AUTH, json={**body, "topic": "return", "trigger": "return.created"})
    assert ok.status_code == 200
    assert [h["topic"] for h in client.get(hooks, headers=AUTH).get_json()["webhooks"]] == ["return"]
    assert client.post("/_sim/config", json={"refused_topics": ["giftcard"]}).status_code == 422
    assert client.post("/_sim/config", json={"refused_topics": []}).status_code == 200
    assert client.post(hooks, headers=AUTH, json=body).status_code == 200


def test_inactive_subscription_gets_nothing(app, client, receiver):
    client.post(f"{API}/webhooks", headers=AUTH,
                json={"topic": "return", "trigger": "return.created", "url": receiver.url()})
    new_return(client)
    idle(app)
    assert receiver.hits == [] and deliveries(client) == []


# --- webhook delivery -----------------------------------------------------------------------------

def test_signature_over_exact_bytes_with_escaped_slashes(app, client, receiver):
    subscribe(client, receiver.url(), "return.created")
    new_return(client)
    hit = receiver.wait_for(1)[0]
    raw = hit["body"]
    expected = base64.b64encode(hmac.new(SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(hit["headers"]["X-Loop-Signature"], expected)
    assert hit["headers"]["Content-Type"] == "application/json"
    assert b'"status_page_url":"https:\\/\\/example.loopreturns.com\\/#\\/return\\/' in raw
    assert b'": ' not in raw and b", " not in raw.replace(b"Blue \\/ S", b"")  # compact separators
    payload = json.loads(raw)
    assert payload["status_page_url"].startswith("https://") and payload["created_at"].endswith("Z")
    reserialised = json.dumps(payload).encode()
    assert hit["headers"]["X-Loop-Signature"] != base64.b64encode(
        hmac.new(SECRET.encode(), reserialised, hashlib.sha256).digest()).decode()


def test_webhook_ids_mix_strings_and_numbers(app, client, receiver):
    subscribe(client, receiver.url(), "return.created")
    first, second = new_return(client), new_return(client)
    receiver.wait_for(2)
    by_id = {int(p["id"]): p for p in receiver.payloads()}
    one, two = by_id[first["id"]], by_id[second["id"]]
    assert type(one["id"]) is not type(two["id"])  # varies between returns
    assert type(one["order_id"]) is not type(one["id"])  # and between fields of one return
    assert {type(li["line_item_id"]) for li in one["line_items"]} == {int, str}  # and between line items
    assert isinstance(one["shop_id"], int) and isinstance(one["line_items"][0]["provider_line_item_id"], str)
    assert {type(one["address"]["zip"]), type(two["address"]["zip"])} == {int, str}


def test_retry_on_503_then_success(app, client, receiver):
    receiver.script = [(503, {}), (500, {})]
    subscribe(client, receiver.url(), "return.created")
    ret = new_return(client)
    receiver.wait_for(3)
    idle(app)
    [delivery] = deliveries(client)
    assert delivery["outcome"] == "delivered" and delivery["return_id"] == ret["id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert len({hit["body"] for hit in receiver.hits}) == 1


def test_retries_stop_after_six_attempts(make_app, receiver):
    app = make_app(webhook_retry_base_s=0.01)
    client = app.test_client()
    receiver.script = [(502, {})] * 10
    subscribe(client, receiver.url(), "return.created")
    new_return(client)
    idle(app)
    [delivery] = deliveries(client)
    assert (delivery["outcome"], len(delivery["attempts"])) == ("failed", 6)


def test_no_retry_on_400(app, client, receiver):
    receiver.script = [(400, {})]
    subscribe(client, receiver.url(), "return.created")
    new_return(client)
    receiver.wait_for(1)
    idle(app)
    time.sleep(0.2)
    [delivery] = deliveries(client)
    assert delivery["outcome"] == "failed" and len(delivery["attempts"]) == 1 and len(receiver.hits) == 1


def test_retry_after_honoured_and_too_long_fails(app, client, receiver):
    receiver.script = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "3600"})]
    subscribe(client, receiver.url("a"), "return.created")
    new_return(client)
    first, second = receiver.wait_for(2)
    assert second["at"] - first["at"] >= 0.9
    idle(app)
    [delivery] = deliveries(client)
    assert delivery["outcome"] == "failed" and "Retry-After" in delivery["reason"]
    assert [a["status_code"] for a in delivery["attempts"]] == [429, 503]


def test_connection_error_is_retried(make_app, receiver):
    app = make_app(webhook_retry_base_s=0.01)
    client = app.test_client()
    subscribe(client, "http://127.0.0.1:9/closed", "return.created")
    new_return(client)
    idle(app)
    [delivery] = deliveries(client)
    assert len(delivery["attempts"]) == 6 and delivery["attempts"][0]["status_code"] is None
    assert delivery["attempts"][0]["error"]


def test_duplicate_deliveries(make_app, receiver):
    app = make_app(duplicate_deliveries=3)
    client = app.test_client()
    subscribe(client, receiver.url(), "return.created")
    new_return(client)
    receiver.wait_for(3)
    idle(app)
    assert len(receiver.hits) == 3 and len({hit["body"] for hit in receiver.hits}) == 1


# --- sandbox controls -----------------------------------------------------------------------------

def test_admin_state_change_fires_webhooks_and_is_not_an_api_action(app, client, receiver):
    subscribe(client, receiver.url(), "return.updated", "return.closed")
    ret = new_return(client)
    resp = client.post(f"/_sim/returns/{ret['id']}/state", json={"state": "closed"})
    assert resp.get_json()["state"] == "closed"
    receiver.wait_for(2)
    assert [p["trigger"] for p in receiver.payloads()] == ["return.updated", "return.closed"]
    internal = client.get(f"/_sim/returns/{ret['id']}").get_json()
    assert internal["actions"] == [] and internal["history"][-1]["cause"] == "admin"
    assert client.post(f"/_sim/returns/{ret['id']}/state", json={"state": "open"}).status_code == 422


def test_faults_hit_api_routes_only(client):
    client.post("/_sim/faults", json={"match": {"path": "/webhooks"}, "status": 503, "retry_after": 2, "times": 1})
    resp = client.get(f"{API}/webhooks", headers=AUTH)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
    assert client.get(f"{API}/webhooks", headers=AUTH).status_code == 200
    client.post("/_sim/faults", json={"match": {}, "status": 500})
    assert client.get("/_sim/stats").status_code == 200
    assert client.delete("/_sim/faults").status_code == 204
    assert client.get(f"{API}/webhooks", headers=AUTH).status_code == 200


def test_config_validation_and_reset(client):
    assert client.post("/_sim/config", json={"refusal_status": 500}).status_code == 422
    assert client.post("/_sim/config", json={"nonsense": 1}).status_code == 422
    assert client.post("/_sim/config", json={"refusal_status": 422}).get_json()["refusal_status"] == 422
    ret = new_return(client)
    client.post("/_sim/reset")
    assert client.get("/_sim/config").get_json()["refusal_status"] == 200
    assert client.get(f"/_sim/returns/{ret['id']}").status_code == 404
    assert client.get("/_sim/stats").get_json()["totals"]["returns"] == 0


def test_concurrent_actions_are_counted_once_each(app):
    server = ServerThread(app).start()
    try:
        ids = [requests.post(f"{server.url}/_sim/returns",
                             json={"order_name": f"#{i}", "line_items": [{"sku": "A", "price": 1}]}).json()["id"]
               for i in range(8)]

        def flag(return_id):
            requests.post(f"{server.url}{API}/warehouse/return/{return_id}/flag", headers=AUTH)

        threads = [threading.Thread(target=flag, args=(i,)) for i in ids * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = requests.get(f"{server.url}/_sim/stats").json()
        assert stats["totals"]["flag"] == 8 and stats["totals"]["refused"] == 8
    finally:
        server.stop()


def test_the_ledger_keeps_each_action_unrounded(client):
    """`make bench` (latency) times our process call by the sandbox's ledger, to the microsecond."""
    import time

    ret = new_return(client)
    before = time.time()
    assert client.post(f"{API}/warehouse/return/{ret['id']}/process", headers=AUTH, json={}).get_json() == "true"
    (action,) = client.get(f"/_sim/returns/{ret['id']}").get_json()["actions"]
    assert before - 0.001 <= action["at_s"] <= time.time() + 0.001
