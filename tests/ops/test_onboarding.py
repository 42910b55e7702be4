"""Onboarding a merchant (integration/ops/onboarding.py) against both sandboxes over real HTTP:
every check ok; a bad Loop key; a key without a scope; bad RLM credentials, company, warehouse;
unknown SKUs in a sample return, each with its reason; webhooks subscribed topic by topic with one
topic refused; a backfill run twice making one RMA per return. SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from integration.errors import FinalError, RetryableError
from integration.merchants import demo_merchant_config, parse_merchants
from integration.ops import onboarding, onboarding_record
from integration.ops.onboarding import Status
from integration.settings import load_settings
from integration.store.models import Return
from integration.workflow import steps
from integration.workflow.context import Context
from sandbox.common import ServerThread
from sandbox.loop import create_app as loop_app
from sandbox.rlm import create_app as rlm_app

LOOP_KEY = "onboard-loop-key-0123456789"
RLM_KEY = "onboard-rlm-key-abcdefghij"
KNOWN = {"sku": "CB11D10-BLUE-S", "barcode": "099999000054", "price": "88.00", "return_reason": "Too small"}


@pytest.fixture(scope="module")
def servers():
    loop = loop_app({"api_keys": [LOOP_KEY], "process_delay_s": 0.05})
    found = {"loop": ServerThread(loop).start(),
             "rlm": ServerThread(rlm_app({"username": "svc", "key": RLM_KEY, "timeout_hang_s": 1})).start()}
    yield found
    loop.extensions["loop_sandbox"].shutdown()
    for server in found.values():
        server.stop()


class Onboard:
    """A Context on the sandboxes whose steps are queued, run by `drain`."""

    def __init__(self, servers, sessions):
        self.loop_url, self.rlm_url = servers["loop"].url, servers["rlm"].url
        self.sessions = sessions
        self.queue: list[tuple[str, object]] = []
        for url in (self.loop_url, self.rlm_url):
            requests.post(f"{url}/_sim/reset", timeout=5).raise_for_status()

    def merchant(self, **changes):
        config = demo_merchant_config()
        config.update(name="acme", loop_base_url=self.loop_url, loop_api_key=LOOP_KEY,
                      rlm_base_url=self.rlm_url, rlm_username="svc", rlm_key=RLM_KEY)
        config.update(changes)
        return parse_merchants([config])["acme"]

    def ctx(self, **changes) -> Context:
        m = self.merchant(**changes)
        return Context(settings=load_settings(), merchants={m.name: m}, sessions=self.sessions,
                       enqueue=lambda step, target: self.queue.append((step, target)))

    def loop_config(self, **settings) -> None:
        requests.post(f"{self.loop_url}/_sim/config", json=settings, timeout=5).raise_for_status()

    def new_return(self, *items: dict, state: str | None = None) -> str:
        body = {"order_name": "#1001", "line_items": list(items or [KNOWN, KNOWN])}
        r = requests.post(f"{self.loop_url}/_sim/returns", json=body, timeout=5)
        r.raise_for_status()
        loop_id = str(r.json()["id"])
        if state:
            requests.post(f"{self.loop_url}/_sim/returns/{loop_id}/state", json={"state": state},
                          timeout=5).raise_for_status()
        return loop_id

    def drain(self, ctx: Context) -> None:
        while self.queue:
            step, target = self.queue.pop(0)
            try:
                steps.run_step(ctx, step, target)
            except RetryableError:
                pass

    def ras(self, loop_id: str) -> list[dict]:
        r = requests.get(f"{self.rlm_url}/api/v1/companies/90/return-authorizations",
                         params={"external_ref": f"acme:{loop_id}"}, auth=("svc", RLM_KEY), timeout=5)
        return r.json()["data"]


@pytest.fixture
def onboard(servers, sessions) -> Onboard:
    return Onboard(servers, sessions)


def by_name(report) -> dict[str, onboarding.Check]:
    return {c.name: c for c in report.items}


def no_secret(report) -> None:
    text = repr(report) + "\n".join(onboarding.render(report))
    assert LOOP_KEY not in text and RLM_KEY not in text


def test_every_check_passes_on_a_merchant_set_up_right(onboard):
    loop_id = onboard.new_return()
    report = onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="alice")
    checks = by_name(report)
    assert report.ok, report.failed
    assert [c.status for c in report.items] == [Status.OK] * len(report.items)
    assert list(checks)[:7] == ["Loop API key", "Loop scope Returns", "Loop scope Developer Tools",
                                "RLM credentials", "RLM company", "returns warehouse", "RLM division"]
    assert checks[f"Loop return {loop_id}: SKUs"].detail == "1 SKU(s) found in RLM's catalog"
    assert report.summary == f"all {len(report.items)} checks passed" and report.operator == "alice"
    no_secret(report)


def test_a_wrong_loop_key_fails_and_what_needs_it_is_skipped(onboard):
    onboard.new_return()
    report = onboarding.check_merchant(onboard.ctx(loop_api_key="wrong-key-000000000000"),
                                       onboard.merchant(loop_api_key="wrong-key-000000000000"),
                                       operator="alice")
    checks = by_name(report)
    assert checks["Loop API key"].status is Status.FAILED
    assert "refused it on every call" in checks["Loop API key"].detail
    assert "Unauthorized." in checks["Loop API key"].detail and "HTTP 401" in checks["Loop API key"].detail
    assert checks["Loop scope Returns"].status is Status.SKIPPED
    assert checks["Loop scope Developer Tools"].status is Status.SKIPPED
    assert checks["sample returns' SKUs"].status is Status.SKIPPED
    assert checks["RLM credentials"].status is Status.OK  # the other side is still checked
    assert "wrong-key" not in "\n".join(onboarding.render(report))


@pytest.mark.parametrize("has, lacks", [(["returns"], "Developer Tools"), (["developer_tools"], "Returns")])
def test_a_key_without_a_scope_names_the_scope(onboard, has, lacks):
    onboard.new_return()
    onboard.loop_config(api_key_scopes={LOOP_KEY: has})
    report = onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="alice")
    checks = by_name(report)
    assert checks["Loop API key"].status is Status.OK
    missing = checks[f"Loop scope {lacks}"]
    assert missing.status is Status.FAILED and f"lacks the {lacks} scope" in missing.detail
    other = "Returns" if lacks == "Developer Tools" else "Developer Tools"
    assert checks[f"Loop scope {other}"].status is Status.OK
    assert [c.name for c in report.failed] == [f"Loop scope {lacks}"]
    no_secret(report)


def test_bad_rlm_credentials_fail_and_the_company_is_skipped(onboard):
    report = onboarding.check_merchant(onboard.ctx(), onboard.merchant(rlm_key="not-the-key-000000"),
                                       operator="alice")
    checks = by_name(report)
    assert checks["RLM credentials"].status is Status.FAILED
    assert "The user/key combination does not exist (HTTP 401)" in checks["RLM credentials"].detail
    assert checks["RLM company"].status is Status.SKIPPED
    assert checks["sample returns' SKUs"].status is Status.SKIPPED
    assert "not-the-key" not in "\n".join(onboarding.render(report))


def test_an_unknown_company_a_warehouse_that_takes_no_returns_and_a_missing_division(onboard):
    checks = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(rlm_company=91), operator="a"))
    assert checks["RLM credentials"].status is Status.OK
    assert checks["RLM company"].status is Status.FAILED
    assert checks["RLM company"].detail.startswith("RLM has no company 91 (Invalid Company (HTTP 404))")
    checks = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(warehouse_number=2,
                                                                               division_number=77), operator="a"))
    assert checks["returns warehouse"].status is Status.FAILED
    assert "does not accept returns" in checks["returns warehouse"].detail
    assert checks["RLM division"].status is Status.FAILED and "no division 77" in checks["RLM division"].detail
    checks = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(warehouse_number=99), operator="a"))
    assert checks["returns warehouse"].detail == "company 90 has no warehouse 99: check warehouse_number"


def test_unknown_skus_in_a_sample_return_are_reported_with_the_lookups_tried(onboard):
    good = onboard.new_return()
    bad = onboard.new_return(KNOWN, {"sku": "ZZ9-PLAIN-M", "barcode": "", "price": "10.00"},
                             {"sku": "NOPATTERN", "barcode": "123456789012", "price": "5.00"})
    report = onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="alice")
    checks = by_name(report)
    assert checks[f"Loop return {good}: SKUs"].status is Status.OK
    failed = checks[f"Loop return {bad}: SKUs"]
    assert failed.status is Status.FAILED
    assert failed.detail.startswith("SKU unknown to RLM: ZZ9-PLAIN-M (barcode none), looked up by "
                                    "UPC ZZ9-PLAIN-M, then style ZZ9 colour PLAIN size M; NOPATTERN "
                                    "(barcode 123456789012), looked up by UPC 123456789012, then UPC "
                                    "NOPATTERN; the SKU does not fit sku_pattern")
    assert "Its RMA would not be created" in failed.detail
    assert "CB11D10" not in failed.detail  # the SKU RLM knows is not listed
    assert [c.name for c in report.failed] == [f"Loop return {bad}: SKUs"]


def test_no_recent_open_returns_skips_the_sku_sample(onboard):
    onboard.new_return(state="closed")
    checks = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="a"))
    assert checks["sample returns' SKUs"].status is Status.SKIPPED


def hooks(onboard) -> list[dict]:
    return requests.get(f"{onboard.loop_url}/api/v1/webhooks", headers={"X-Authorization": LOOP_KEY},
                        timeout=5).json()["webhooks"]


def test_subscribe_reports_a_refused_topic_and_still_subscribes_the_others(onboard):
    onboard.loop_config(refused_topics=["return.processing"])
    report = onboarding.subscribe(onboard.ctx(), onboard.merchant(), "https://rlm.example.com/",
                                  operator="alice")
    topics = by_name(report)
    assert topics["topic return"].status is Status.OK
    assert "3 created or re-activated" in topics["topic return"].detail
    refused = topics["topic return.processing"]
    assert refused.status is Status.FAILED
    assert refused.detail.startswith("Loop refused it: Must be one of the following values:"
                                     "return,label,restock (HTTP 422).")
    assert not report.ok and report.summary == "1 of 2 topics refused at https://rlm.example.com/webhooks/loop/acme"
    check = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="alice"))
    assert check["Loop scope Developer Tools"].detail == (
        "the webhooks list answers; not active to /webhooks/loop/acme yet: return.processing.failed "
        "(`merchants subscribe` adds them)")
    subscribed = {(h["trigger"], h["url"], h["status"]) for h in hooks(onboard)}
    url = "https://rlm.example.com/webhooks/loop/acme"
    assert subscribed == {(t, url, "active") for t in ("return.created", "return.updated", "return.closed")}

    onboard.loop_config(refused_topics=[])  # Loop enabled the topic: subscribing again adds only it
    again = onboarding.subscribe(onboard.ctx(), onboard.merchant(), "https://rlm.example.com",
                                 operator="alice")
    assert again.ok and by_name(again)["topic return"].detail.endswith("(all were already active)")
    assert len(hooks(onboard)) == 4
    check = by_name(onboarding.check_merchant(onboard.ctx(), onboard.merchant(), operator="alice"))
    assert check["Loop scope Developer Tools"].detail.endswith("all 4 webhooks active to /webhooks/loop/acme")


def test_subscribe_without_the_developer_tools_scope_fails_every_topic(onboard):
    onboard.loop_config(api_key_scopes={LOOP_KEY: ["returns"]})
    report = onboarding.subscribe(onboard.ctx(), onboard.merchant(), "https://rlm.example.com",
                                  operator="alice")
    assert [c.status for c in report.items] == [Status.FAILED, Status.FAILED]
    assert "Unauthorized. (HTTP 401)" in report.items[0].detail
    no_secret(report)


def test_webhook_url_takes_only_an_http_base():
    assert onboarding.webhook_url(" https://x.example.com/ ", "acme") == "https://x.example.com/webhooks/loop/acme"
    for bad in ("x.example.com", "ftp://x", "https://x/?a=1", ""):
        with pytest.raises(ValueError):
            onboarding.webhook_url(bad, "acme")


def test_backfill_records_open_returns_once_and_makes_one_rma_each(onboard, sessions):
    first, second = onboard.new_return(), onboard.new_return()
    closed = onboard.new_return(state="closed")
    ctx = onboard.ctx()
    since = ctx.now() - timedelta(days=7)
    report = onboarding.backfill(ctx, "acme", since, operator="alice")
    assert sorted(c.name for c in report.items) == sorted([f"Loop return {first}", f"Loop return {second}"])
    again = onboarding.backfill(ctx, "acme", since, operator="alice")  # before the RMAs exist
    assert again.items == () and again.summary.startswith("nothing to do")
    onboard.drain(ctx)
    assert onboarding.backfill(ctx, "acme", since, operator="bob").items == ()
    onboard.drain(ctx)
    for loop_id in (first, second):
        assert len(onboard.ras(loop_id)) == 1
    assert onboard.ras(closed) == []
    with sessions() as s:
        rows = s.query(Return).filter_by(merchant="acme").all()
        assert sorted(r.loop_return_id for r in rows) == sorted([first, second])
        assert all(r.state == "rma_created" or r.state == "transmitted" for r in rows)
        assert rows[0].timeline[0].cause == "backfilled by alice"


def test_the_last_report_of_each_action_is_kept_per_merchant(onboard, sessions):
    ctx = onboard.ctx()
    report = onboarding.check_merchant(ctx, onboard.merchant(rlm_key="nope-nope-nope"), operator="alice")
    with sessions() as s:
        onboarding_record.keep(s, report)
        onboarding_record.keep(s, onboarding.check_merchant(ctx, onboard.merchant(), operator="bob"))
    with sessions() as s:
        kept = onboarding_record.last_reports(s)
    assert list(kept) == ["acme"] and list(kept["acme"]) == ["check"]
    last = kept["acme"]["check"]
    assert last["operator"] == "bob" and last["ok"] is True and last["summary"].startswith("all ")
    assert {i["status"] for i in last["items"]} == {"ok", "skipped"}  # no return to sample


# --- the verdicts, pure ------------------------------------------------------------------------------
def test_loop_verdicts_tell_a_down_loop_from_a_wrong_key():
    down, refused = RetryableError("loop", "Server Error", status=503), FinalError("loop", "Unauthorized.", status=401)
    key, returns, hooks = onboarding.loop_verdicts("https://api.loopreturns.com", down, refused, 0, "")
    assert (key.status, key.detail) == (Status.FAILED, "https://api.loopreturns.com: Server Error (HTTP 503)")
    assert returns.status is Status.FAILED and returns.detail == "the returns list: Server Error (HTTP 503)"
    assert hooks.status is Status.SKIPPED
    unreachable = RetryableError("loop", "ConnectionError on GET /api/v1/webhooks")
    key, _, hooks = onboarding.loop_verdicts("https://x", None, unreachable, 3, "")
    assert key.status is Status.OK and hooks.status is Status.FAILED
    assert hooks.detail == "the webhooks list: unreachable (ConnectionError on GET /api/v1/webhooks)"


def test_rlm_verdicts_read_a_legacy_code_0_company_refusal():
    merchant = parse_merchants([demo_merchant_config()])["demo"]
    code0 = FinalError("rlm", "Invalid Company", status=200)
    creds, company = onboarding.rlm_verdicts(merchant, code0, [], [])
    assert creds.status is Status.OK and company.status is Status.FAILED
    assert company.detail == "RLM has no company 90 (Invalid Company (HTTP 200)): check rlm_company"
    outage = onboarding.rlm_verdicts(merchant, FinalError("rlm", "Service Unavailable", status=503), [], [])
    assert [(c.name, c.status) for c in outage] == [("RLM credentials", Status.FAILED)]
