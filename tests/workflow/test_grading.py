from datetime import UTC, datetime

from integration.workflow.grading import grades

RMA = [{"line_number": 1, "style_number": "CB11D10", "color": "BLUE", "size": "S", "qty_authorized": 2,
        "external_line_refs": ["101", "102"]},
       {"line_number": 2, "style_number": "CB11D10", "color": "RED", "size": "M", "qty_authorized": 1,
        "external_line_refs": ["103"]}]
WHEN = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


def test_each_unit_gets_the_condition_it_arrived_in_and_missing_units_are_missing():
    receipts = [{"lines": [{"ra_line_number": 1, "qty_received": 1, "condition": "GOOD"},
                           {"ra_line_number": 1, "qty_received": 1, "condition": "DAMAGED"},
                           {"ra_line_number": None, "unexpected": True, "qty_received": 1}]}]
    by_unit = {g["line_item_id"]: g for g in grades(RMA, receipts, WHEN)}
    assert by_unit[101]["condition_category"] == "grade_a"
    assert by_unit[102]["condition_category"] == "grade_c"
    assert by_unit[102]["description"] == "received damaged: CB11D10-BLUE-S"
    assert by_unit[103]["condition_category"] == "missing"
    assert by_unit[103]["inspected_at"] == "2024-03-20 12:00:00"
    assert len(by_unit) == 3  # the unexpected item is not a Loop unit
