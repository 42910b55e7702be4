"""Counting a return's RAs from the RLM sandbox's ledger: the external_ref is the bare Loop
return id today, `<merchant>:<loop return id>` once scoped by merchant; both count."""
from stack.demo import ras_for


def stats(refs: dict) -> dict:
    return {"ras_per_external_ref": {"90": refs}}


def test_bare_and_merchant_scoped_refs_both_count():
    assert ras_for(stats({"52393555": 1}), "52393555") == 1
    assert ras_for(stats({"demo:52393555": 1}), "52393555") == 1
    assert ras_for(stats({"52393555": 1, "demo:52393555": 1}), "52393555") == 2


def test_other_returns_and_companies_do_not_count():
    refs = {"152393555": 1, "demo:152393555": 1, "52393555x": 1}
    assert ras_for(stats(refs), "52393555") == 0
    assert ras_for({"ras_per_external_ref": {"91": {"52393555": 1}}}, "52393555") == 0
    assert ras_for(stats({}), "52393555") == 0
