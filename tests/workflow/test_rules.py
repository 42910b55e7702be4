"""One case per row of docs/workflow.md's decision table (defaults and options)."""
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from integration.merchants import Criteria
from integration.workflow import rules

NOW = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)
RMA = [
    {"line_number": 1, "style_number": "CB11D10", "color": "BLUE", "size": "S", "qty_authorized": 2,
     "external_line_refs": ["u1", "u2"]},
    {"line_number": 2, "style_number": "CB11D10", "color": "RED", "size": "M", "qty_authorized": 1,
     "external_line_refs": ["u3"]},
]


def line(ra_line, qty=1, condition="GOOD", **extra):
    return {"ra_line_number": ra_line, "qty_received": qty, "condition": condition, **extra}


def receipt(*lines):
    return {"lines": list(lines)}


ALL_GOOD = receipt(line(1, 2), line(2, 1))
SHORT = receipt(line(1, 1), line(2, 1))


def decide(receipts, criteria=Criteria(), *, first=NOW - timedelta(hours=1), expires=NOW + timedelta(days=20),
           total=None):
    return rules.decide(RMA, receipts, criteria, now=NOW, first_receipt_at=first if receipts else None,
                        expires_at=expires, return_total=total)


CASES = [
    # (name, receipts, criteria, kwargs, action, rules fired, texts that must appear)
    ("all received in good condition", [ALL_GOOD], Criteria(), {}, rules.PROCESS, [], []),
    ("part received, inside the grace period", [SHORT], Criteria(), {}, rules.WAIT, [], []),
    ("part received, grace period over", [SHORT], Criteria(), {"first": NOW - timedelta(hours=73)},
     rules.FLAG, ["missing"], ["missing 1 x CB11D10-BLUE-S"]),
    ("missing with remove-and-process option", [SHORT], Criteria(on_missing="remove_and_process"),
     {"first": NOW - timedelta(hours=73)}, rules.REMOVE_AND_PROCESS, ["missing"], []),
    ("damaged unit", [receipt(line(1, 1), line(1, 1, "DAMAGED"), line(2, 1))], Criteria(), {},
     rules.FLAG, ["condition"], ["received damaged 1 x CB11D10-BLUE-S"]),
    ("damaged accepted by this merchant", [receipt(line(1, 1), line(1, 1, "DAMAGED"), line(2, 1))],
     Criteria(accepted_conditions=("GOOD", "DAMAGED")), {}, rules.PROCESS, [], []),
    ("item not on the RMA", [receipt(line(1, 2), line(2, 1),
                                     {"ra_line_number": None, "unexpected": True, "qty_received": 1,
                                      "style_number": "CB11D10", "color": "BLUE", "size": "L",
                                      "condition": "WRONG_ITEM"})],
     Criteria(), {}, rules.FLAG, ["unexpected"], ["not on RMA 1 x CB11D10-BLUE-L"]),
    ("more units than authorized", [receipt(line(1, 3), line(2, 1))], Criteria(), {}, rules.FLAG,
     ["over_received"], ["over-received 1 x CB11D10-BLUE-S"]),
    ("over-receipt tolerated by this merchant", [receipt(line(1, 3), line(2, 1))],
     Criteria(flag_over_received=False), {}, rules.PROCESS, [], []),
    ("value above the threshold", [ALL_GOOD], Criteria(value_threshold=Decimal("200")),
     {"total": Decimal("264.00")}, rules.FLAG, ["value_threshold"], ["return value 264.00 above 200.00"]),
    ("value under the threshold", [ALL_GOOD], Criteria(value_threshold=Decimal("300")),
     {"total": Decimal("264.00")}, rules.PROCESS, [], []),
    ("nothing received yet", [], Criteria(), {}, rules.WAIT, [], []),
    ("nothing received by expiry", [], Criteria(), {"expires": NOW - timedelta(seconds=1)}, rules.FLAG,
     ["expired"], ["nothing received by the RMA's expiry"]),
    ("nothing received by expiry, merchant closes", [], Criteria(on_expiry="close"),
     {"expires": NOW - timedelta(seconds=1)}, rules.CLOSE, ["expired"], []),
]


@pytest.mark.parametrize("name, receipts, criteria, kwargs, action, fired, texts", CASES,
                         ids=[c[0] for c in CASES])
def test_criteria_table(name, receipts, criteria, kwargs, action, fired, texts):
    decision = decide(receipts, criteria, **kwargs)
    assert decision.action == action
    assert decision.rules == fired
    for text in texts:
        assert text in [d.text for d in decision.discrepancies]


def test_every_discrepancy_is_named_together():
    receipts = [receipt(line(1, 1, "DAMAGED"), {"ra_line_number": None, "unexpected": True, "qty_received": 1,
                                                 "style_number": "X", "color": "Y", "size": "Z"})]
    decision = decide(receipts, first=NOW - timedelta(hours=80))
    assert decision.action == rules.FLAG
    assert decision.rules == ["condition", "missing", "unexpected"]
    assert decision.summary == ("missing 1 x CB11D10-BLUE-S; received damaged 1 x CB11D10-BLUE-S; "
                                "missing 1 x CB11D10-RED-M; not on RMA 1 x X-Y-Z")


def test_remove_and_process_names_the_missing_units():
    decision = decide([SHORT], Criteria(on_missing="remove_and_process"), first=NOW - timedelta(hours=73))
    assert decision.remove_line_item_ids == ["u2"]


def test_missing_plus_damage_still_flags_even_with_remove_option():
    receipts = [receipt(line(1, 1, "DAMAGED"), line(2, 1))]
    decision = decide(receipts, Criteria(on_missing="remove_and_process"), first=NOW - timedelta(hours=73))
    assert decision.action == rules.FLAG


def test_grace_period_is_configurable():
    short_grace = replace(Criteria(), partial_grace_s=60)
    assert decide([SHORT], short_grace, first=NOW - timedelta(seconds=61)).action == rules.FLAG
    assert decide([SHORT], short_grace, first=NOW - timedelta(seconds=59)).action == rules.WAIT


@pytest.mark.parametrize("receipts, progress", [([], "none"), ([SHORT], "partial"), ([ALL_GOOD], "complete")])
def test_receipt_progress(receipts, progress):
    assert rules.receipt_progress(RMA, receipts) == progress
