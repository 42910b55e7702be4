"""Behaviour of the RLM sandbox against docs/rlm-api.md Part B (B.2–B.9), quirks included."""
from __future__ import annotations

import base64
import threading
import time

import pytest
import requests

from sandbox.common import ServerThread
from sandbox.rlm import create_app

BASE = "/api/v1/companies/90"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-rlm-key").decode()}
HANG_S = 0.4
BLUE_S, BLUE_M = "099999000054", "099999000055"


def line(n=1, **fields):
    data = {"line_number": n, "qty_authorized": 1, "unit_price": "88.00", "reason_code": "TOO_SMALL"}
    return {**data, **fields}


def ra_body(ref="52393555", lines=None, **fields):
    body = {
        "division_number": 10, "warehouse_number": 1, "customer_number": "WEB0000", "customer_po": "#1001",
        "external_ref": ref, "external_source": "LOOP", "ra_date": 20240312,
        "ship_from": {"name": "Jane Doe", "city": "Brooklyn", "state": "NY", "zip": "11201",
                      "country_code": "USA"},
        "lines": lines if lines is not None else [
            line(1, upc=BLUE_S, sku_number=4, style_number="CB11D10", color="BLUE", size="S", qty_authorized=2,
                 external_line_refs=["293482039", "293482040"]),
            line(2, style_number="KT200", color="NAVY", size="M", reason_code="DEFECTIVE"),
        ],
    }
    return {**body, **fields}


class Api:
    """Flask test client bound to company 90 with good credentials."""

    def __init__(self, client):
        self.client = client

    def get(self, path, **kw):
        return self.client.get(BASE + path, headers=AUTH, **kw)

    def post(self, path, json=None, headers=None, **kw):
        return self.client.post(BASE + path, json=json, headers={**AUTH, **(headers or {})}, **kw)

    def patch(self, path, json=None):
        return self.client.patch(BASE + path, json=json, headers=AUTH)

    def sim(self, path, json=None, method="post"):
        return getattr(self.client, method)("/_sim" + path, json=json)

    def create(self, ref="52393555", **fields):
        response = self.post("/return-authorizations", ra_body(ref, **fields))
        assert response.status_code == 201, response.json
        return response.json["ra_number"]

    def status(self, ra):
        return self.get(f"/return-authorizations/{ra}").json["status"]

    def receive(self, ra, scenario):
        return self.sim(f"/companies/90/return-authorizations/{ra}/receive", {"scenario": scenario})


@pytest.fixture
def app():
    return create_app({"timeout_hang_s": HANG_S,
                       "companies": {91: {"preferred_warehouse": 1, "auto_transmit_on_create": True}}})


@pytest.fixture
def api(app):
    return Api(app.test_client())


def ra_in_status(api, status, ref="r1"):
    """An RA driven into `status` through the API (and the sandbox receiving control)."""
    ra = api.create(ref)
    if status == "OPEN":
        return ra
    api.post(f"/return-authorizations/{ra}/transmit")
    steps = {"PARTIALLY_RECEIVED": ["partial"], "RECEIVED": ["exact"], "CLOSED": ["exact"]}
    for scenario in steps.get(status, []):
        api.receive(ra, scenario)
    if status == "CLOSED":
        api.post(f"/return-authorizations/{ra}/close", {"close_reason": "LOOP_PROCESSED"})
    if status == "CANCELLED":
        api.post(f"/return-authorizations/{ra}/cancel")
    assert api.status(ra) == status
    return ra


# ----- auth, company, reference data, items -------------------------------------------------------

def test_bad_credentials_are_401_with_rlm_wording(app):
    client = app.test_client()
    wrong = {"Authorization": "Basic " + base64.b64encode(b"demo:nope").decode()}
    for headers in (wrong, {}):
        response = client.get(BASE + "/warehouses", headers=headers)
        assert response.status_code == 401
        assert response.json == {"code": 0, "description": "The user/key combination does not exist"}


def test_credentials_come_from_env_when_no_settings(monkeypatch):
    monkeypatch.setenv("RLM_USERNAME", "acme")
    monkeypatch.setenv("RLM_KEY", "s3cret")
    client = create_app().test_client()
    assert client.get(BASE + "/warehouses", headers=AUTH).status_code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"acme:s3cret").decode()}
    assert client.get(BASE + "/warehouses", headers=good).status_code == 200


def test_unknown_company_is_404_invalid_company(api):
    response = api.client.get("/api/v1/companies/77/warehouses", headers=AUTH)
    assert response.status_code == 404
    assert response.json == {"code": 0, "description": "Invalid Company"}
    assert api.client.get("/api/v1/companies/91/warehouses", headers=AUTH).status_code == 200


def test_reference_data_is_seeded(api):
    warehouses = {w["warehouse_number"]: w for w in api.get("/warehouses").json["data"]}
    assert warehouses[1]["accepts_returns"] and warehouses[1]["is_3pl"]
    assert not warehouses[2]["accepts_returns"]
    codes = [r["code"] for r in api.get("/reason-codes").json["data"]]
    assert codes == ["TOO_SMALL", "TOO_LARGE", "DEFECTIVE", "NOT_AS_DESCRIBED", "CHANGED_MIND", "WRONG_ITEM", "OTHER"]
    assert {d["division_number"] for d in api.get("/divisions").json["data"]} == {10, 20}


def test_items_list_all_is_paged_matrix_form(api):
    everything = api.get("/items").json
    assert everything["code"] == 1 and everything["total_records"] == len(everything["data"]) >= 7
    upcs = [sku["upc"] for item in everything["data"] for sku in item["skus"]]
    assert len(upcs) >= 20 and len(set(upcs)) == len(upcs) and all(len(u) == 12 and u.isdigit() for u in upcs)
    for item in everything["data"]:
        assert [sku["size"] for sku in item["skus"]] == item["sizes"]
    page = api.get("/items?start_row=3&limit_rows=2").json
    assert page["total_records"] == everything["total_records"]
    assert page["data"] == everything["data"][2:4]


def test_items_upc_resolves_one_sku(api):
    found = api.get(f"/items?upc={BLUE_S}").json
    assert found["total_records"] == 1
    item = found["data"][0]
    identity = (item["style_number"], item["color"], item["sku_number"], item["division_number"])
    assert identity == ("CB11D10", "BLUE", 4, 10)
    assert item["sizes"] == ["S"] and item["skus"] == [{"size": "S", "upc": BLUE_S}]
    red = api.get("/items?style_number=CB11D10&color=RED").json["data"]
    assert [i["sizes"] for i in red] == [["S", "M", "L"]]


def test_items_unknown_upc_is_empty_success(api):
    assert api.get("/items?upc=000000000000").json == {
        "code": 1, "description": "Success", "total_records": 0, "data": []}


def test_bad_parameters_and_json_are_400(api):
    assert api.get("/items?limit_rows=0").json == {"code": 0, "description": "Invalid Parameter limit_rows"}
    assert api.get("/return-authorizations?updated_since=yesterday").json["description"] == \
        "Invalid Parameter updated_since"
    assert api.get("/return-authorizations?status=LOST").status_code == 400
    response = api.client.post(BASE + "/return-authorizations", data="{nope", headers=AUTH,
                               content_type="application/json")
    assert response.status_code == 400
    assert response.json == {"code": 0, "description": "Invalid JSON"}


# ----- create: idempotency, numbering, line filling ------------------------------------------------

def test_create_is_idempotent_on_external_ref(api):
    first = api.post("/return-authorizations", ra_body("52393555"))
    assert first.status_code == 201 and first.json["status"] == "OPEN"
    again = api.post("/return-authorizations", ra_body("52393555", customer_po="#9999", lines=[line(upc=BLUE_M)]))
    assert again.status_code == 200 and again.json["replayed"] is True
    assert again.json["ra_number"] == first.json["ra_number"]
    assert again.json["customer_po"] == "#1001" and len(again.json["lines"]) == 2  # stored RA unchanged
    stats = api.sim("/stats", method="get").json
    assert stats["ras_per_external_ref"]["90"] == {"52393555": 1}
    assert stats["create_calls_per_external_ref"]["90"] == {"52393555": 2}
    assert api.get("/return-authorizations?external_ref=52393555").json["total_records"] == 1


def test_create_replays_whatever_the_status(api):
    ra = ra_in_status(api, "CANCELLED", ref="abc")
    again = api.post("/return-authorizations", ra_body("abc"))
    assert again.status_code == 200 and again.json["status"] == "CANCELLED" and again.json["ra_number"] == ra


def test_ra_numbers_are_sequential_per_company(api):
    assert [api.create(f"r{i}") for i in range(3)] == [3100, 3101, 3102]
    other = api.client.post("/api/v1/companies/91/return-authorizations", json=ra_body("r0"), headers=AUTH)
    assert other.json["ra_number"] == 3100


def test_server_fills_lines_from_upc_or_from_style_colour_size(api):
    ra = api.post("/return-authorizations", ra_body(lines=[
        line(1, upc="099999000056"), line(2, style_number="CB11D10", color="RED", size="M")])).json
    first, second = ra["lines"]
    assert (first["sku_number"], first["style_number"], first["color"], first["size"]) == (4, "CB11D10", "BLUE", "L")
    assert first["season_year"] == "24" and first["description"]
    assert second["upc"] == "099999000058" and second["sku_number"] == 4
    assert first["qty_received"] == 0 and first["line_status"] == "NOT_RECEIVED"
    assert ra["asn"] is None and ra["expiration_date"] == 20240411
    assert ra["ship_from"]["country_code"] == "USA" and ra["created_at"].endswith("Z")


@pytest.mark.parametrize("lines, description, line_number, field", [
    ([line(1, upc=BLUE_S), line(2, upc=BLUE_S, size="M")], "Invalid Size on Line 2", 2, "size"),
    ([line(1, upc="123456789012")], "Invalid UPC on Line 1", 1, "upc"),
    ([line(1, upc=BLUE_S, color="RED")], "Invalid Color on Line 1", 1, "color"),
    ([line(1, style_number="CB11D10", color="GREEN", size="S")], "Invalid Color on Line 1", 1, "color"),
    ([line(1, style_number="CB11D10", color="BLUE", size="XXL")], "Invalid Size on Line 1", 1, "size"),
    ([line(1, sku_number=999, color="BLUE", size="S")], "Invalid SKU Number on Line 1", 1, "sku_number"),
    ([line(1, sku_number=7, style_number="CB11D10", color="BLUE", size="S")],
     "SKU Number Does Not Match With Style Passed on Line 1", 1, "sku_number"),
    ([line(1, upc=BLUE_S), line(2, upc=BLUE_M), line(3, upc=BLUE_S, reason_code="MEH")],
     "Invalid Reason Code on Line 3", 3, "reason_code"),
    ([line(1, upc=BLUE_S, qty_authorized=0)], "Invalid Quantity on Line 1", 1, "qty_authorized"),
])
def test_line_validation_is_422_with_a4_wording(api, lines, description, line_number, field):
    response = api.post("/return-authorizations", ra_body(lines=lines))
    assert response.status_code == 422
    assert response.json == {"code": 0, "description": description, "line_number": line_number, "field": field}
    assert api.get("/return-authorizations").json["total_records"] == 0


@pytest.mark.parametrize("fields, description", [
    ({"warehouse_number": 99}, "Invalid Warehouse"),
    ({"warehouse_number": None}, "No Warehouse Was Received And There Is No Setup For A Preferred One"),
    ({"warehouse_number": 2}, "Warehouse Does Not Accept Returns"),
    ({"ship_from": {"state": "New York"}}, "Shipping State Too Long. Max 2 Characters"),
    ({"lines": [line(1, upc=BLUE_S), line(2, style_number="AC900", color="BROWN", size="M")]},
     "Lines Span Multiple Divisions"),
])
def test_header_validation_is_422(api, fields, description):
    response = api.post("/return-authorizations", ra_body(**fields))
    assert response.status_code == 422
    assert response.json["code"] == 0 and response.json["description"] == description


def test_preferred_warehouse_and_auto_transmit_company_settings(api):
    response = api.client.post("/api/v1/companies/91/return-authorizations",
                               json=ra_body(warehouse_number=None), headers=AUTH)
    assert response.status_code == 201
    assert response.json["warehouse_number"] == 1
    assert response.json["status"] == "TRANSMITTED" and response.json["asn"]["asn_number"]


def test_auto_transmit_can_be_switched_on_via_sim_config(api):
    assert api.sim("/config", {"auto_transmit_on_create": True}).json["companies"]["90"]["auto_transmit_on_create"]
    assert api.post("/return-authorizations", ra_body()).json["status"] == "TRANSMITTED"


# ----- lifecycle -----------------------------------------------------------------------------------

ALLOWED = {
    "transmit": {"OPEN": "TRANSMITTED"},
    "cancel": {"OPEN": "CANCELLED", "TRANSMITTED": "CANCELLED"},
    "close": {"TRANSMITTED": "CLOSED", "PARTIALLY_RECEIVED": "CLOSED", "RECEIVED": "CLOSED"},
    "receipts": {"TRANSMITTED": "PARTIALLY_RECEIVED", "PARTIALLY_RECEIVED": "RECEIVED"},
}
ACTION_BODIES = {"transmit": None, "cancel": None, "close": {"close_reason": "MANUAL", "note": "by hand"},
                 "receipts": {"lines": [{"ra_line_number": 2, "qty_received": 1}]}}
STATUSES = ["OPEN", "TRANSMITTED", "PARTIALLY_RECEIVED", "RECEIVED", "CLOSED", "CANCELLED"]


@pytest.mark.parametrize("action", list(ALLOWED))
@pytest.mark.parametrize("status", STATUSES)
def test_lifecycle_table(api, status, action):
    ra = ra_in_status(api, status)
    response = api.post(f"/return-authorizations/{ra}/{action}", ACTION_BODIES[action])
    expected = ALLOWED[action].get(status)
    if expected is None:
        assert response.status_code == 409
        assert response.json["code"] == 0 and response.json["status"] == status
        assert api.status(ra) == status
    else:
        assert response.status_code in (200, 201), response.json
        assert api.status(ra) == expected


def test_transmit_creates_the_asn_and_emits_events(api):
    ra = api.create()
    assert api.get(f"/return-authorizations/{ra}").json["asn"] is None
    answer = api.post(f"/return-authorizations/{ra}/transmit").json
    assert answer["asn_number"] and answer["transmitted_at"].endswith("Z")
    stored = api.get(f"/return-authorizations/{ra}").json["asn"]
    assert stored == {"asn_number": answer["asn_number"], "transmitted_at": answer["transmitted_at"]}
    again = api.post(f"/return-authorizations/{ra}/transmit")
    assert again.status_code == 409 and again.json["description"] == "Return Authorization Is Not Open"


def test_close_validates_reason_and_keeps_it(api):
    ra = ra_in_status(api, "RECEIVED")
    bad = api.post(f"/return-authorizations/{ra}/close", {"close_reason": "BORED"})
    assert bad.status_code == 422 and bad.json["field"] == "close_reason"
    closed = api.post(f"/return-authorizations/{ra}/close", {"close_reason": "LOOP_PROCESSED", "note": "done"}).json
    assert (closed["status"], closed["close_reason"], closed["close_note"]) == ("CLOSED", "LOOP_PROCESSED", "done")


def test_unknown_ra_is_404(api):
    for response in (api.get("/return-authorizations/4242"), api.post("/return-authorizations/4242/transmit"),
                     api.get("/return-authorizations/4242/receipts")):
        assert response.status_code == 404
        assert response.json == {"code": 0, "description": "Return Authorization Not Found"}


def test_patch_lines_only_while_open_carrier_until_terminal(api):
    ra = api.create()
    patched = api.patch(f"/return-authorizations/{ra}", {"lines": [line(1, upc=BLUE_M, qty_authorized=3)]}).json
    assert [(l["upc"], l["qty_authorized"]) for l in patched["lines"]] == [(BLUE_M, 3)]
    bad = api.patch(f"/return-authorizations/{ra}", {"lines": [line(1, upc="1")]})
    assert bad.status_code == 422 and bad.json["description"] == "Invalid UPC on Line 1"
    api.post(f"/return-authorizations/{ra}/transmit")
    refused = api.patch(f"/return-authorizations/{ra}", {"lines": [line(1, upc=BLUE_S)]})
    assert refused.status_code == 409 and refused.json["description"] == "Return Authorization Is Not Open"
    tracked = api.patch(f"/return-authorizations/{ra}", {"carrier": "UPS", "tracking_number": "1Z999"}).json
    assert (tracked["carrier"], tracked["tracking_number"]) == ("UPS", "1Z999")
    assert api.patch(f"/return-authorizations/{ra}", {"status": "RECEIVED"}).status_code == 400
    api.post(f"/return-authorizations/{ra}/cancel")
    assert api.patch(f"/return-authorizations/{ra}", {"carrier": "FedEx"}).status_code == 409


def test_search_filters(api, app):
    api.sim("/clock", {"set": "2024-03-01T00:00:00Z", "frozen": True})
    first = api.create("a", customer_po="#1")
    api.sim("/clock", {"advance_s": 3600})
    second = api.create("b", customer_po="#2")
    api.post(f"/return-authorizations/{second}/transmit")

    def numbers(query):
        return [ra["ra_number"] for ra in api.get("/return-authorizations" + query).json["data"]]

    assert numbers("") == [first, second]
    assert numbers("?status=TRANSMITTED") == [second]
    assert numbers("?customer_po=%231") == [first]
    assert numbers("?updated_since=2024-03-01T00:30:00Z") == [second]
    assert numbers("?start_row=2&limit_rows=1") == [second]


# ----- receiving ------------------------------------------------------------------------------------

def _received(ra_view):
    return [(l["qty_received"], l["qty_received_good"], l["qty_received_damaged"], l["line_status"])
            for l in ra_view["lines"]]


@pytest.mark.parametrize("scenario, status, received, unexpected_upcs", [
    ("exact", "RECEIVED", [(2, 2, 0, "RECEIVED"), (1, 1, 0, "RECEIVED")], []),
    ("partial", "PARTIALLY_RECEIVED", [(2, 2, 0, "RECEIVED"), (0, 0, 0, "NOT_RECEIVED")], []),
    ("damaged", "RECEIVED", [(2, 1, 1, "RECEIVED"), (1, 1, 0, "RECEIVED")], []),
    ("wrong_item", "PARTIALLY_RECEIVED", [(1, 1, 0, "PARTIALLY_RECEIVED"), (1, 1, 0, "RECEIVED")], [BLUE_M]),
    ("over", "RECEIVED", [(3, 3, 0, "OVER_RECEIVED"), (1, 1, 0, "RECEIVED")], []),
])
def test_receive_scenarios(api, scenario, status, received, unexpected_upcs):
    ra = ra_in_status(api, "TRANSMITTED")
    answer = api.receive(ra, scenario).json
    receipt = answer["receipt"]
    assert answer["status"] == status and receipt["source"] == "SANDBOX" and receipt["ra_number"] == ra
    assert [l["upc"] for l in receipt["lines"] if l["unexpected"]] == unexpected_upcs
    assert all(l["ra_line_number"] is None for l in receipt["lines"] if l["unexpected"])
    view = api.get(f"/return-authorizations/{ra}").json
    assert view["status"] == status and _received(view) == received
    assert api.get(f"/return-authorizations/{ra}/receipts").json["data"] == [receipt]


def test_receive_scenario_none_posts_nothing(api):
    ra = ra_in_status(api, "TRANSMITTED")
    assert api.receive(ra, "none").json == {"code": 1, "description": "Success", "receipt": None,
                                            "status": "TRANSMITTED"}
    assert api.get(f"/return-authorizations/{ra}/receipts").json["total_records"] == 0


def test_partial_then_remainder_completes(api):
    ra = ra_in_status(api, "PARTIALLY_RECEIVED")
    receipt = api.receive(ra, "remainder").json["receipt"]
    assert [(l["ra_line_number"], l["qty_received"]) for l in receipt["lines"]] == [(2, 1)]
    view = api.get(f"/return-authorizations/{ra}").json
    assert view["status"] == "RECEIVED" and _received(view) == [(2, 2, 0, "RECEIVED"), (1, 1, 0, "RECEIVED")]


def test_receive_explicit_lines(api):
    ra = ra_in_status(api, "TRANSMITTED")
    answer = api.sim(f"/companies/90/return-authorizations/{ra}/receive", {"lines": [
        {"upc": BLUE_S, "qty_received": 2, "condition": "DEFECTIVE", "disposition": "RTV"},
        {"sku_number": 7, "color": "NAVY", "size": "M", "qty_received": 1, "condition": "GOOD",
         "disposition": "RESTOCK"},
        {"sku_number": 7, "color": "GREY", "size": "XL", "qty_received": 1},
    ]}).json
    lines = answer["receipt"]["lines"]
    assert [(l["ra_line_number"], l["unexpected"]) for l in lines] == [(1, False), (2, False), (None, True)]
    assert answer["status"] == "RECEIVED"
    assert _received(api.get(f"/return-authorizations/{ra}").json)[0] == (2, 0, 2, "RECEIVED")


def test_sim_receive_refuses_open_ra(api):
    ra = api.create()
    response = api.receive(ra, "exact")
    assert response.status_code == 409 and response.json["status"] == "OPEN"


def test_3pl_receipt_honours_idempotency_key(api):
    ra = ra_in_status(api, "TRANSMITTED")
    body = {"lines": [{"upc": BLUE_S, "qty_received": 1}], "tracking_number": "1Z1"}
    first = api.post(f"/return-authorizations/{ra}/receipts", body, headers={"Idempotency-Key": "k-1"})
    again = api.post(f"/return-authorizations/{ra}/receipts", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json["replayed"] is True
    assert again.json["receipt_number"] == first.json["receipt_number"]
    assert first.json["source"] == "3PL" and first.json["tracking_number"] == "1Z1"
    assert api.get(f"/return-authorizations/{ra}/receipts").json["total_records"] == 1
    other = api.post(f"/return-authorizations/{ra}/receipts", body, headers={"Idempotency-Key": "k-2"})
    assert other.status_code == 201 and other.json["receipt_number"] != first.json["receipt_number"]


def test_3pl_receipt_validation(api):
    ra = ra_in_status(api, "TRANSMITTED")
    bad_condition = api.post(f"/return-authorizations/{ra}/receipts",
                             {"lines": [{"upc": BLUE_S, "qty_received": 1, "condition": "SOGGY"}]})
    assert bad_condition.status_code == 422 and bad_condition.json["description"] == "Invalid Condition on Line 1"
    bad_line = api.post(f"/return-authorizations/{ra}/receipts",
                        {"lines": [{"ra_line_number": 9, "qty_received": 1}]})
    assert bad_line.json["description"] == "Invalid RA Line Number on Line 1"
    assert api.post(f"/return-authorizations/{ra}/receipts", {"lines": []}).status_code == 422
    assert api.status(ra) == "TRANSMITTED"


# ----- feeds ----------------------------------------------------------------------------------------

def test_receipt_feed_pages_with_cursor(api):
    api.sim("/clock", {"set": "2024-03-10T12:00:00Z", "frozen": True})
    ras = [ra_in_status(api, "TRANSMITTED", ref=f"r{i}") for i in range(4)]
    receipt_numbers = []
    for i, ra in enumerate(ras):
        api.sim("/clock", {"set": f"2024-03-1{i + 1}T00:00:00Z"})
        receipt_numbers.append(api.receive(ra, "exact").json["receipt"]["receipt_number"])

    page1 = api.get("/receipts?updated_since=2024-03-01T00:00:00Z&limit=3").json
    assert [r["receipt_number"] for r in page1["data"]] == receipt_numbers[:3] and page1["has_more"] is True
    page2 = api.get(f"/receipts?cursor={page1['next_cursor']}&limit=3").json
    assert [r["receipt_number"] for r in page2["data"]] == receipt_numbers[3:] and page2["has_more"] is False
    empty = api.get(f"/receipts?cursor={page2['next_cursor']}&limit=3").json
    assert empty["data"] == [] and empty["next_cursor"] == page2["next_cursor"] and empty["has_more"] is False

    since = api.get("/receipts?updated_since=2024-03-13T00:00:00Z").json
    assert [r["receipt_number"] for r in since["data"]] == receipt_numbers[2:]
    nothing_yet = api.get("/receipts?updated_since=2030-01-01T00:00:00Z").json
    assert nothing_yet["data"] == [] and nothing_yet["next_cursor"]


def test_receipt_feed_orders_by_updated_at_then_number_and_resumes(api):
    api.sim("/clock", {"set": "2024-03-20T00:00:00Z", "frozen": True})
    late, early = ra_in_status(api, "TRANSMITTED", "late"), ra_in_status(api, "TRANSMITTED", "early")
    late_no = api.receive(late, "exact").json["receipt"]["receipt_number"]
    api.sim("/clock", {"set": "2024-03-19T00:00:00Z"})  # a receipt numbered later but updated earlier
    early_no = api.receive(early, "exact").json["receipt"]["receipt_number"]
    feed = api.get("/receipts?limit=10").json
    assert [r["receipt_number"] for r in feed["data"]] == [early_no, late_no]

    api.sim("/clock", {"set": "2024-03-21T00:00:00Z"})
    newest = ra_in_status(api, "TRANSMITTED", "newest")
    newest_no = api.receive(newest, "partial").json["receipt"]["receipt_number"]
    resumed = api.get(f"/receipts?cursor={feed['next_cursor']}").json
    assert [r["receipt_number"] for r in resumed["data"]] == [newest_no]


def test_receipt_feed_rejects_bad_parameters(api):
    assert api.get("/receipts?updated_since=03/01/2024").json == {
        "code": 0, "description": "Invalid Parameter updated_since"}
    assert api.get("/receipts?cursor=garbage!!").json["description"] == "Invalid Parameter cursor"
    assert api.get("/receipts?limit=-1").status_code == 400


def test_events_feed(api):
    ra = ra_in_status(api, "TRANSMITTED")
    receipt_no = api.receive(ra, "exact").json["receipt"]["receipt_number"]
    api.post(f"/return-authorizations/{ra}/close", {"close_reason": "LOOP_PROCESSED"})
    other = api.create("x")
    api.post(f"/return-authorizations/{other}/cancel")
    events = api.get("/events").json["data"]
    assert [e["type"] for e in events] == ["RA_CREATED", "RA_TRANSMITTED", "RA_RECEIPT_POSTED", "RA_STATUS_CHANGED",
                                           "RA_CLOSED", "RA_CREATED", "RA_CANCELLED"]
    assert [e["event_id"] for e in events] == list(range(1, 8))
    assert events[2]["receipt_number"] == receipt_no
    page = api.get("/events?after_event_id=2&limit=2").json
    assert [e["event_id"] for e in page["data"]] == [3, 4] and page["has_more"] and page["last_event_id"] == 4
    assert api.get("/events?after_event_id=7").json["last_event_id"] == 7


# ----- sandbox controls: faults, clock, auto-receive, reset, stats ----------------------------------

def test_fault_html_503_fires_times_then_stops(api):
    api.sim("/faults", {"match": {"method": "POST", "path": "/return-authorizations*"},
                        "status": 503, "html": True, "times": 2})
    for _ in range(2):
        response = api.post("/return-authorizations", ra_body())
        assert response.status_code == 503 and response.content_type.startswith("text/html")
        assert b"HTTP Status 503" in response.data
    assert api.get("/warehouses").status_code == 200  # GET does not match
    assert api.post("/return-authorizations", ra_body()).status_code == 201
    stats = api.sim("/stats", method="get").json
    assert stats["faults_fired"] == 2 and stats["ras"] == 1


def test_fault_code0_answers_http_200(api):
    api.sim("/faults", {"match": {"path": "/api/v1/companies/90/items"}, "code0": "Invalid Warehouse"})
    response = api.get(f"/items?upc={BLUE_S}")
    assert response.status_code == 200 and response.json == {"code": 0, "description": "Invalid Warehouse"}
    assert api.sim("/clock", method="get").status_code == 200  # never applies to /_sim


def test_fault_latency_and_probability(api):
    api.sim("/faults", {"seed": 7})
    api.sim("/faults", {"match": {"path": "/divisions"}, "latency_ms": 200})
    api.sim("/faults", {"match": {"path": "/warehouses"}, "status": 500, "probability": 0.5})
    started = time.monotonic()
    assert api.get("/divisions").status_code == 200
    assert time.monotonic() - started >= 0.2
    codes = [api.get("/warehouses").status_code for _ in range(40)]
    assert 0 < codes.count(500) < 40 and set(codes) == {200, 500}
    assert api.sim("/faults", method="delete").json["code"] == 1
    assert api.get("/warehouses").status_code == 200


def test_fault_timeout_after_does_the_work_then_hangs(api):
    api.sim("/faults", {"match": {"method": "POST", "path": "/return-authorizations"}, "timeout": True,
                        "after": True, "times": 1})
    started = time.monotonic()
    assert api.post("/return-authorizations", ra_body()).status_code == 201
    assert time.monotonic() - started >= HANG_S
    retry = api.post("/return-authorizations", ra_body())
    assert retry.status_code == 200 and retry.json["replayed"] is True


def test_fault_timeout_before_hangs_and_does_nothing(api):
    api.sim("/faults", {"match": {"method": "POST", "path": "/return-authorizations"}, "timeout": True, "times": 1})
    started = time.monotonic()
    response = api.post("/return-authorizations", ra_body())
    assert response.status_code == 504 and response.json["code"] == 0
    assert time.monotonic() - started >= HANG_S
    assert api.sim("/stats", method="get").json["ras"] == 0
    assert api.post("/return-authorizations", ra_body()).status_code == 201


def test_clock_set_advance_and_freeze(api):
    assert api.sim("/clock", {"set": "2024-03-20T12:00:00Z", "frozen": True}).json["now"] == "2024-03-20T12:00:00Z"
    assert api.sim("/clock", {"advance_s": 86400}).json["now"] == "2024-03-21T12:00:00Z"
    ra = api.post("/return-authorizations", ra_body()).json
    assert ra["created_at"] == ra["updated_at"] == "2024-03-21T12:00:00Z"
    assert api.sim("/clock", {"set": "soon"}).status_code == 400
    assert api.sim("/clock", {"frozen": False}).json["frozen"] is False
    assert api.sim("/clock", method="get").json["now"] >= "2024-03-21T12:00:00Z"


def test_auto_receive_after_delay_on_sandbox_clock(api):
    api.sim("/clock", {"set": "2024-03-20T12:00:00Z", "frozen": True})
    api.sim("/config", {"auto_transmit_on_create": True, "auto_receive": {"scenario": "exact", "after_s": 120}})
    ra = api.create()
    assert api.status(ra) == "TRANSMITTED"
    api.sim("/clock", {"advance_s": 119})
    assert api.status(ra) == "TRANSMITTED"
    api.sim("/clock", {"advance_s": 1})
    assert api.status(ra) == "RECEIVED"
    receipts = api.get(f"/return-authorizations/{ra}/receipts").json["data"]
    assert len(receipts) == 1 and receipts[0]["source"] == "SANDBOX"
    api.sim("/clock", {"advance_s": 600})
    assert api.get("/receipts").json["data"] == receipts  # applied once only


def test_reset_wipes_and_reseeds(api):
    api.create()
    api.sim("/faults", {"match": {"path": "/divisions"}, "status": 500})
    api.sim("/config", {"auto_transmit_on_create": True})
    assert api.sim("/reset").json["code"] == 1
    assert api.get("/divisions").status_code == 200
    assert api.get("/return-authorizations").json["total_records"] == 0
    assert api.get("/events").json["data"] == []
    created = api.post("/return-authorizations", ra_body()).json
    assert created["ra_number"] == 3100 and created["status"] == "OPEN"
    assert len(api.get("/reason-codes").json["data"]) == 7


def test_stats_count_requests_per_route_pattern(api):
    ra = api.create()
    api.get(f"/return-authorizations/{ra}")
    api.get(f"/return-authorizations/{ra}")
    api.post(f"/return-authorizations/{ra}/transmit")
    requests_seen = api.sim("/stats", method="get").json["requests"]
    assert requests_seen == {"POST /return-authorizations": 1, "GET /return-authorizations/{ra}": 2,
                             "POST /return-authorizations/{ra}/transmit": 1}


# ----- over real HTTP --------------------------------------------------------------------------------

@pytest.fixture
def server(app):
    thread = ServerThread(app).start()
    yield thread
    thread.stop()


def test_concurrent_creates_over_http_make_one_ra(server):
    url = f"{server.url}{BASE}/return-authorizations"
    codes, barrier = [], threading.Barrier(8)

    def create():
        barrier.wait()
        codes.append(requests.post(url, json=ra_body("loop-1"), auth=("demo", "demo-rlm-key"), timeout=5).status_code)

    workers = [threading.Thread(target=create) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(codes) == [200] * 7 + [201]
    stats = requests.get(f"{server.url}/_sim/stats", timeout=5).json()
    assert stats["ras_per_external_ref"]["90"] == {"loop-1": 1}


def test_timeout_fault_over_http_times_out_client_but_commits(server):
    requests.post(f"{server.url}/_sim/faults", timeout=5,
                  json={"match": {"method": "POST", "path": "/return-authorizations"}, "timeout": True,
                        "after": True, "times": 1})
    url = f"{server.url}{BASE}/return-authorizations"
    with pytest.raises(requests.Timeout):
        requests.post(url, json=ra_body("loop-2"), auth=("demo", "demo-rlm-key"), timeout=0.1)
    retry = requests.post(url, json=ra_body("loop-2"), auth=("demo", "demo-rlm-key"), timeout=5)
    assert retry.status_code == 200 and retry.json()["replayed"] is True


def test_sim_receive_answers_the_unrounded_record_time(api):
    """`make bench` (latency) times a receipt from the sandbox's own clock, to the microsecond,
    while the API keeps RLM's whole seconds."""
    from datetime import datetime

    ra = ra_in_status(api, "TRANSMITTED")
    before = time.time()
    answer = api.receive(ra, "exact").json
    assert before - 0.001 <= answer["recorded_at_s"] <= time.time() + 0.001
    assert "recorded_at_s" not in answer["receipt"]
    assert abs(answer["recorded_at_s"] - datetime.fromisoformat(answer["receipt"]["updated_at"]).timestamp()) < 1
