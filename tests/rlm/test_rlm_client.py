"""The RLM client against the RLM sandbox over real HTTP: every method, one test per quirk (docs/rlm-api.md B)."""
from __future__ import annotations

import pytest

from integration.errors import FinalError, NotFound, RetryableError
from integration.rlm.client import JsonTransport, RlmClient
from tests.sandboxes import HANG_S, RLM_KEY, RLM_USER, SHORT_TIMEOUT, TIMEOUT

BLUE_S = "099999000054"


def ra_payload(ref: str = "52393555", lines: list[dict] | None = None, **fields) -> dict:
    """The B.5 example request."""
    body = {
        "division_number": 10, "warehouse_number": 1, "customer_number": "WEB0000", "customer_po": "#1001",
        "external_ref": ref, "external_source": "LOOP", "ra_date": 20240312,
        "ship_from": {"name": "Jane Doe", "city": "Brooklyn", "state": "NY", "zip": "11201", "country_code": "USA"},
        "lines": lines or [{"line_number": 1, "upc": BLUE_S, "sku_number": 4, "style_number": "CB11D10",
                            "color": "BLUE", "size": "S", "qty_authorized": 2, "unit_price": "88.00",
                            "reason_code": "TOO_SMALL", "reason_note": "Too small / Didn't fit",
                            "external_line_refs": ["293482039", "293482040"]}],
    }
    return {**body, **fields}


def transmitted(rlm, ref: str = "52393555") -> int:
    ra, _ = rlm.create_ra(ra_payload(ref))
    rlm.transmit(ra["ra_number"])
    return ra["ra_number"]


# --- reference data and items --------------------------------------------------------------------

def test_reference_data(rlm, rlm_sim):
    assert {w["warehouse_number"] for w in rlm.warehouses() if w["accepts_returns"]} == {1}
    assert {"TOO_SMALL", "OTHER"} <= {r["code"] for r in rlm.reason_codes()}
    assert {d["division_number"] for d in rlm.divisions()} == {10, 20}


def test_item_lookup_by_upc_and_by_style_colour_size(rlm, rlm_sim):
    [by_upc] = rlm.find_items(upc=BLUE_S)
    assert (by_upc["style_number"], by_upc["color"], by_upc["sku_number"]) == ("CB11D10", "BLUE", 4)
    [by_name] = rlm.find_items(style_number="CB11D10", color="BLUE", size="S")
    assert BLUE_S in [sku["upc"] for sku in by_name["skus"]]
    assert rlm.find_items(upc="000000000000") == []


# --- return authorizations -----------------------------------------------------------------------

def test_create_then_replay_returns_the_same_ra_unchanged(rlm, rlm_sim):
    ra, created = rlm.create_ra(ra_payload())
    assert created and ra["status"] == "OPEN" and ra["lines"][0]["qty_authorized"] == 2
    again, created_again = rlm.create_ra(ra_payload(customer_po="#9999"))
    assert not created_again and again["replayed"] is True
    assert (again["ra_number"], again["customer_po"]) == (ra["ra_number"], "#1001")
    assert rlm_sim.get("/stats")["ras_per_external_ref"]["90"] == {"52393555": 1}


def test_a_create_that_timed_out_is_safely_resent_as_a_replay(rlm_sim):
    """The first answer hangs past the read timeout after the RA was made; the quick re-send replays it."""
    rlm = RlmClient(JsonTransport(rlm_sim.url, 90, RLM_USER, RLM_KEY, timeout=SHORT_TIMEOUT))
    rlm_sim.fault(match={"method": "POST", "path": "/return-authorizations"}, timeout=True, after=True, times=1)
    ra, created = rlm.create_ra(ra_payload())
    assert not created and ra["replayed"] is True
    assert rlm_sim.get("/stats")["create_calls_per_external_ref"]["90"] == {"52393555": 2}
    assert rlm_sim.get("/stats")["ras_per_external_ref"]["90"] == {"52393555": 1}


def test_find_get_and_list_with_filters_and_paging(rlm, rlm_sim):
    numbers = [rlm.create_ra(ra_payload(f"r{i}", customer_po=f"#{1000 + i % 2}"))[0]["ra_number"] for i in range(5)]
    rlm.transmit(numbers[0])
    assert rlm.find_ra("r3")["ra_number"] == numbers[3] and rlm.find_ra("nope") is None
    assert rlm.get_ra(numbers[0])["asn"]["asn_number"]
    assert [ra["ra_number"] for ra in rlm.list_ras(page_size=2)] == numbers
    assert [ra["ra_number"] for ra in rlm.list_ras(customer_po="#1001", page_size=1)] == numbers[1::2]
    assert [ra["ra_number"] for ra in rlm.list_ras(status="TRANSMITTED")] == numbers[:1]
    assert rlm.list_ras(updated_since="2999-01-01T00:00:00Z") == []


def test_patch_carrier_and_tracking_until_terminal_lines_only_while_open(rlm, rlm_sim):
    number = transmitted(rlm)
    patched = rlm.patch_ra(number, carrier="USPS", tracking_number="9400111899223100000000")
    assert (patched["carrier"], patched["tracking_number"]) == ("USPS", "9400111899223100000000")
    with pytest.raises(FinalError) as caught:
        rlm.patch_ra(number, lines=ra_payload()["lines"])
    assert (caught.value.status, caught.value.message) == (409, "Return Authorization Is Not Open")


def test_patch_of_an_unknown_field_is_refused_before_any_call(rlm, session):
    with pytest.raises(ValueError):
        rlm.patch_ra(3100, status="CLOSED")
    assert session.sent == []


def test_transmit_creates_the_asn_and_a_second_transmit_is_409(rlm, rlm_sim):
    ra, _ = rlm.create_ra(ra_payload())
    answer = rlm.transmit(ra["ra_number"])
    assert answer["status"] == "TRANSMITTED" and answer["asn_number"] and answer["transmitted_at"]
    with pytest.raises(FinalError) as caught:
        rlm.transmit(ra["ra_number"])
    assert (caught.value.status, caught.value.message) == (409, "Return Authorization Is Not Open")
    assert caught.value.body["status"] == "TRANSMITTED"


def test_cancel_and_close(rlm, rlm_sim):
    ra, _ = rlm.create_ra(ra_payload("to-cancel"))
    assert rlm.cancel(ra["ra_number"])["status"] == "CANCELLED"
    number = transmitted(rlm, "to-close")
    rlm_sim.receive(number, "exact")
    closed = rlm.close(number, "LOOP_PROCESSED", "processed in Loop")
    assert (closed["status"], closed["close_reason"]) == ("CLOSED", "LOOP_PROCESSED")


@pytest.mark.parametrize("action", [lambda rlm, n: rlm.cancel(n), lambda rlm, n: rlm.close(n, "MANUAL"),
                                    lambda rlm, n: rlm.patch_ra(n, carrier="UPS")], ids=["cancel", "close", "patch"])
def test_terminal_ra_refuses_with_409(rlm, rlm_sim, action):
    ra, _ = rlm.create_ra(ra_payload())
    rlm.cancel(ra["ra_number"])
    with pytest.raises(FinalError) as caught:
        action(rlm, ra["ra_number"])
    assert caught.value.status == 409


def test_unknown_ra_is_not_found(rlm, rlm_sim):
    with pytest.raises(NotFound) as caught:
        rlm.get_ra(1)
    assert caught.value.message == "Return Authorization Not Found"


# --- receipts and feeds --------------------------------------------------------------------------

def test_receipts_for_one_ra_after_a_3pl_receipt(rlm, rlm_sim):
    number = transmitted(rlm)
    rlm_sim.receive(number, "damaged")
    [receipt] = rlm.receipts_for(number)
    assert {line["condition"] for line in receipt["lines"]} == {"GOOD", "DAMAGED"}
    assert rlm.get_ra(number)["lines"][0]["qty_received_damaged"] == 1


def test_post_receipt_with_the_same_idempotency_key_replays(rlm, rlm_sim):
    number = transmitted(rlm)
    receipt = {"lines": [{"ra_line_number": 1, "qty_received": 1}], "source": "3PL"}
    first, created = rlm.post_receipt(number, receipt, "asn-1-box-1")
    again, created_again = rlm.post_receipt(number, receipt, "asn-1-box-1")
    assert created and not created_again and again["receipt_number"] == first["receipt_number"]
    assert len(rlm.receipts_for(number)) == 1 and rlm.get_ra(number)["status"] == "PARTIALLY_RECEIVED"


def test_receipt_feed_pages_to_the_end_and_keeps_the_cursor_on_an_empty_page(rlm, rlm_sim):
    numbers = [transmitted(rlm, f"r{i}") for i in range(5)]
    for number in numbers:
        rlm_sim.receive(number, "exact")
    page = rlm.receipt_page(updated_since="2000-01-01T00:00:00Z", limit=2)
    seen = [r["receipt_number"] for r in page["data"]]
    while page["has_more"]:
        page = rlm.receipt_page(cursor=page["next_cursor"], limit=2)
        seen += [r["receipt_number"] for r in page["data"]]
    assert len(seen) == 5 == len(set(seen))
    empty = rlm.receipt_page(cursor=page["next_cursor"], limit=2)
    assert empty["data"] == [] and empty["next_cursor"] == page["next_cursor"]
    rlm_sim.receive(transmitted(rlm, "late"), "exact")
    assert len(rlm.receipt_page(cursor=empty["next_cursor"])["data"]) == 1  # the cursor resumes


def test_events_feed_pages_by_after_event_id(rlm, rlm_sim):
    number = transmitted(rlm)
    first = rlm.events(limit=1)
    assert [e["type"] for e in first["data"]] == ["RA_CREATED"] and first["has_more"]
    rest = rlm.events(after_event_id=first["last_event_id"])
    assert [(e["type"], e["ra_number"]) for e in rest["data"]] == [("RA_TRANSMITTED", number)]
    assert not rest["has_more"]


# --- quirks and failures (B.2, B.8) --------------------------------------------------------------

def test_code_0_under_http_200_is_final_with_the_description_verbatim(rlm, rlm_sim):
    rlm_sim.fault(match={"method": "POST", "path": "/return-authorizations"}, code0="Invalid Warehouse", times=1)
    with pytest.raises(FinalError) as caught:
        rlm.create_ra(ra_payload())
    assert (caught.value.status, caught.value.message) == (200, "Invalid Warehouse")


@pytest.mark.parametrize("line2, message, field", [
    ({"style_number": "CB11D10", "color": "BLUE", "size": "XXL"}, "Invalid Size on Line 2", "size"),
    ({"style_number": "CB11D10", "color": "GREEN", "size": "S"}, "Invalid Color on Line 2", "color"),
    ({"upc": "000000000000"}, "Invalid UPC on Line 2", "upc"),
    ({"upc": BLUE_S, "reason_code": "BORED"}, "Invalid Reason Code on Line 2", "reason_code"),
])
def test_validation_422_reaches_us_verbatim_with_its_line(rlm, rlm_sim, line2, message, field):
    first = ra_payload()["lines"][0]
    second = {"line_number": 2, "qty_authorized": 1, "unit_price": "10.00", "reason_code": "OTHER", **line2}
    with pytest.raises(FinalError) as caught:
        rlm.create_ra(ra_payload(lines=[first, second]))
    error = caught.value
    assert (error.status, error.message, error.code) == (422, message, field)
    assert error.body["line_number"] == 2


def test_bad_parameter_is_final_400(rlm, rlm_sim):
    with pytest.raises(FinalError) as caught:
        rlm.list_ras(updated_since="last tuesday")
    assert (caught.value.status, caught.value.message) == (400, "Invalid Parameter updated_since")


def test_bad_credentials_are_final_401(rlm_sim):
    client = RlmClient(JsonTransport(rlm_sim.url, 90, RLM_USER, "wrong", timeout=TIMEOUT))
    with pytest.raises(FinalError) as caught:
        client.warehouses()
    assert (caught.value.status, caught.value.message) == (401, "The user/key combination does not exist")


def test_unknown_company_is_not_found(rlm_sim):
    client = RlmClient(JsonTransport(rlm_sim.url, 77, RLM_USER, RLM_KEY, timeout=TIMEOUT))
    with pytest.raises(NotFound, match="Invalid Company"):
        client.warehouses()


def test_html_503_is_retryable_and_a_read_is_resent_quickly(rlm, rlm_sim, session):
    rlm_sim.fault(match={"path": "/warehouses"}, status=503, html=True, times=1)
    assert rlm.warehouses()
    rlm_sim.fault(match={"method": "POST", "path": "/return-authorizations/*/transmit"}, status=503, html=True,
                  retry_after=7, times=1)
    ra, _ = rlm.create_ra(ra_payload())
    with pytest.raises(RetryableError) as caught:
        rlm.transmit(ra["ra_number"])
    assert (caught.value.status, caught.value.retry_after) == (503, 7.0)
    assert caught.value.message.startswith("HTTP 503 on POST ")
    assert len([url for _, url in session.sent if url.endswith("/transmit")]) == 1  # never re-sent


def test_a_hang_past_the_read_timeout_is_retryable(rlm_sim):
    rlm = RlmClient(JsonTransport(rlm_sim.url, 90, RLM_USER, RLM_KEY, timeout=SHORT_TIMEOUT))
    ra, _ = rlm.create_ra(ra_payload())
    rlm_sim.fault(match={"path": "/return-authorizations/*/transmit"}, timeout=True, after=True, times=1)
    with pytest.raises(RetryableError, match="ReadTimeout"):
        rlm.transmit(ra["ra_number"])
    assert SHORT_TIMEOUT[1] < HANG_S
    assert rlm.get_ra(ra["ra_number"])["status"] == "TRANSMITTED"  # the work happened; only the answer was lost
