from integration.workflow.notes import flag_note


def test_note_names_each_discrepancy():
    note = flag_note(3105, ["missing 1 x CB11D10-BLUE-S", "received damaged 1 x CB11D10-BLUE-M"])
    assert note == "RLM RA 3105: missing 1 x CB11D10-BLUE-S; received damaged 1 x CB11D10-BLUE-M"


def test_long_lists_are_summarised_within_254_chars_without_cutting_an_item():
    items = [f"missing {n} x STYLE{n:03d}-COLOURFUL-XXL" for n in range(40)]
    note = flag_note(3105, items)
    assert len(note) <= 254
    assert note.endswith("more discrepancies")
    kept = note[len("RLM RA 3105: "):].split("; ")[:-1]
    assert kept and all(k in items for k in kept)  # whole items only
    assert f"+{len(items) - len(kept)} more" in note


def test_a_single_huge_item_is_counted_rather_than_cut():
    note = flag_note(7, ["x" * 400])
    assert note == "RLM RA 7: +1 more discrepancy"
