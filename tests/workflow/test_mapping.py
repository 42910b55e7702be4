from decimal import Decimal

from integration.merchants import demo_merchant_config, parse_merchants
from integration.workflow.mapping import (
    build_ra,
    group_units,
    ra_line,
    reason_for,
    ship_from,
    split_sku,
    unit_from_loop,
)

MERCHANT = parse_merchants([demo_merchant_config()])["demo"]

DETAILS = {
    "id": 52393555, "order_name": "#1001", "created_at": "2024-03-12 15:04:05", "state": "open",
    "address": {"name": "Jane Doe", "city": "Brooklyn", "state": "New York", "zip": 11201,
                "country_code": "US"},
    "carrier": "", "tracking_number": "N/A",
    "line_items": [
        {"line_item_id": 293482039, "sku": "CB11D10-BLUE-S", "barcode": "099999000054", "price": "88.00",
         "discount": "8.00", "return_reason": "Too small", "parent_return_reason": "Didn't fit"},
        {"line_item_id": "293482040", "sku": "CB11D10-BLUE-S", "barcode": "099999000054", "price": "88.00",
         "discount": "8.00", "return_reason": "Too small", "parent_return_reason": None},
        {"line_item_id": 293482041, "sku": "CB11D10-RED-M", "barcode": "099999000058", "price": "90.00",
         "return_reason": "Changed my mind"},
    ],
}


def units():
    return [unit_from_loop(i) for i in DETAILS["line_items"]]


def test_units_of_one_sku_become_one_line_with_their_count_and_ids():
    groups = group_units(units())
    assert [(g.sku, g.qty) for g in groups] == [("CB11D10-BLUE-S", 2), ("CB11D10-RED-M", 1)]
    assert [u["line_item_id"] for u in groups[0].units] == ["293482039", "293482040"]
    assert groups[0].unit_price == Decimal("80.00")  # price - discount, per unit


def test_same_sku_at_different_prices_is_split_so_each_line_has_one_price():
    u = units()[:2]
    u[1] = {**u[1], "price": "70.00"}
    assert sorted(g.qty for g in group_units(u)) == [1, 1]


def test_reason_code_is_mapped_and_texts_go_to_the_note():
    group = group_units(units())[0]
    code, note = reason_for(group, MERCHANT.reason_code_for)
    assert code == "TOO_SMALL"
    assert note == "Too small / Didn't fit"
    assert MERCHANT.reason_code_for("something nobody configured") == "OTHER"


def test_ship_from_uses_two_letter_state_and_alpha3_country():
    assert ship_from(DETAILS["address"]) == {"name": "Jane Doe", "city": "Brooklyn", "state": "NY",
                                             "zip": "11201", "country_code": "USA"}


def test_sku_pattern_split():
    assert split_sku("CB11D10-BLUE-S", "{style}-{color}-{size}") == {
        "style_number": "CB11D10", "color": "BLUE", "size": "S"}
    assert split_sku("ODDSKU", "{style}-{color}-{size}") is None


def test_ra_body_follows_the_rlm_model():
    group = group_units(units())[0]
    resolved = {"upc": "099999000054", "sku_number": 4, "style_number": "CB11D10", "color": "BLUE",
                "size": "S", "division_number": 10}
    line = ra_line(1, group, resolved, "TOO_SMALL", "Too small")
    body = build_ra(MERCHANT, DETAILS, [line], ship_from(DETAILS["address"]))
    assert body["external_ref"] == "demo:52393555" and body["external_source"] == "LOOP"  # scoped by merchant
    assert body["customer_po"] == "#1001" and body["ra_date"] == 20240312
    assert body["warehouse_number"] == 1 and body["division_number"] == 10
    assert body["ship_from"]["state"] == "NY"
    assert "carrier" not in body and "tracking_number" not in body  # "" and "N/A" mean no label yet
    assert line["qty_authorized"] == 2 and line["unit_price"] == "80.00"
    assert line["external_line_refs"] == ["293482039", "293482040"]
    assert "division_number" not in line


def test_odd_address_types_from_loop_do_not_break_the_mapping():
    assert ship_from({"name": "Pat", "state": 36, "country_code": None}) == {"name": "Pat"}
