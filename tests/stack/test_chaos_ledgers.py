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


def test_the_ledger_checks_catch_double_or_missing_actions_ras_and_unsettled_returns(monkeypatch):
    from unittest import mock

    from stack import chaos
    from stack.chaos import CHAOS_SCENARIOS, Figures, check_ledgers
    from stack.demo import Tracked

    scenario = {s.name: s for s in CHAOS_SCENARIOS}
    tracked = [Tracked(scenario["exact"], "1"), Tracked(scenario["damaged"], "2"),
               Tracked(scenario["exact"], "3"), Tracked(scenario["damaged"], "4")]
    loop = {"returns": {"1": {"process": 2, "flag": 0, "remove": 0, "refused": 3},
                        "2": {"process": 0, "flag": 0, "remove": 0, "refused": 0},
                        "3": {"process": 0, "flag": 0, "remove": 1, "refused": 1},
                        "4": {"process": 0, "flag": 1, "remove": 0, "refused": 2}}}
    rlm = {"ras_per_external_ref": {"90": {"1": 1, "demo:2": 1, "demo:3": 1, "3": 1, "demo:4": 1}}}
    views = {"1": {"state": "complete"}, "2": {"state": "needs_attention", "attention_reason": " "},
             "3": {"state": "transmitted"}, "4": {"state": "needs_attention", "attention_reason": "why"}}

    def answer(body):
        return mock.Mock(status_code=200, json=lambda: body)

    monkeypatch.setattr(chaos.requests, "get", lambda url, **_: answer(loop if url.startswith("loop") else rlm))
    stack = mock.Mock(url=lambda name: name)
    demo = mock.Mock()
    demo.http.get = lambda url, **_: answer(views[url.rsplit("/", 1)[1]])
    fig = Figures(seed=0, returns=4)
    check_ledgers(stack, demo, tracked, fig)
    assert [d.split()[0] for d in fig.ledger_processing_wrong] == ["1"]  # 3: one remove is one
    assert [d.split()[0] for d in fig.ledger_flag_wrong] == ["2"]
    assert [d.split()[0] for d in fig.ledger_ras_not_one] == ["3"]
    assert [d.split()[0] for d in fig.not_settled] == ["2", "3"]
    assert not fig.ok
