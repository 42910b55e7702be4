"""Fault rules over real HTTP, in both sandboxes: before the call (nothing applied) or `after` it.

With `after: true` the call is handled (state changes, the ledger counts it) and then its answer
is held past the client's read timeout, cut off mid-response, or replaced by a 5xx: the client
cannot tell whether the work happened. Without it the fault replaces the call.
"""
from __future__ import annotations

import base64
import logging
import time

import pytest
import requests

from sandbox.common import ServerThread
from sandbox.loop.app import create_app as create_loop_app
from sandbox.rlm import create_app as create_rlm_app

HANG_S = 0.3
READ_TIMEOUT = (2.0, 0.1)  # for `timeout` faults: well under HANG_S
LOOP_KEY = {"X-Authorization": "fault-key"}
RLM_AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-rlm-key").decode()}
RLM_BASE = "/api/v1/companies/90"
BLUE_S = "099999000054"

# effect -> (rule fields, what the client sees)
EFFECTS = {
    "timeout": ({"timeout": True}, requests.Timeout),
    "drop": ({"drop": True}, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)),
    "status": ({"status": 503}, 503),
}


@pytest.fixture(scope="module")
def loop_server():
    app = create_loop_app({"api_keys": ["fault-key"], "process_delay_s": 0.05, "timeout_hang_s": HANG_S})
    server = ServerThread(app).start()
    yield server
    server.stop()
    app.extensions["loop_sandbox"].shutdown()


@pytest.fixture(scope="module")
def rlm_server():
    server = ServerThread(create_rlm_app({"timeout_hang_s": HANG_S})).start()
    yield server
    server.stop()


def call(method: str, url: str, expect, **kw) -> None:
    """Send the call and check the client sees what the fault promises (an exception or a status)."""
    timeout = READ_TIMEOUT if expect is requests.Timeout else 5
    if isinstance(expect, int):
        assert requests.request(method, url, timeout=timeout, **kw).status_code == expect
    else:
        with pytest.raises(expect):
            requests.request(method, url, timeout=timeout, **kw)


@pytest.fixture
def quiet(capfd, caplog):
    """After the test: the servers printed no traceback and logged no error (their threads live on)."""
    yield
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- Loop -------------------------------------------------------------------------------------------

class Loop:
    def __init__(self, url: str):
        self.url = url
        requests.post(f"{url}/_sim/reset", timeout=5).raise_for_status()

    def new_return(self) -> dict:
        body = {"order_name": "#1001", "line_items": [{"sku": "CB11D10-BLUE-S", "price": "88.00"}] * 2}
        return requests.post(f"{self.url}/_sim/returns", json=body, timeout=5).json()

    def fault(self, **rule) -> None:
        requests.post(f"{self.url}/_sim/faults", json=rule, timeout=5).raise_for_status()

    def internal(self, return_id: int) -> dict:
        return requests.get(f"{self.url}/_sim/returns/{return_id}", timeout=5).json()

    def wait_state(self, return_id: int, state: str, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while self.internal(return_id)["state"] != state and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.internal(return_id)["state"]


# action -> (path suffix, JSON body, state once applied)
LOOP_ACTIONS = {
    "process": ("/process", {"rlm_ra_number": "3105"}, "closed"),
    "flag": ("/flag", None, "review"),
    "close": ("/close", None, "closed"),
    "cancel": ("/cancel", None, "cancelled"),
    "remove": ("/remove?line_item_id={line}", None, "closed"),
    "note": ("/note", {"content": "Received in full"}, "open"),
}


@pytest.mark.parametrize("effect", EFFECTS)
@pytest.mark.parametrize("action", LOOP_ACTIONS)
def test_loop_fault_after_the_call_applies_it(loop_server, quiet, action, effect):
    loop = Loop(loop_server.url)
    ret = loop.new_return()
    suffix, body, applied_state = LOOP_ACTIONS[action]
    loop.fault(match={"method": "POST", "path": f"/warehouse/return/*/{action}"}, after=True, times=1,
               **EFFECTS[effect][0])
    path = suffix.format(line=ret["line_items"][0]["line_item_id"])
    call("POST", f"{loop.url}/api/v1/warehouse/return/{ret['id']}{path}", EFFECTS[effect][1],
         json=body, headers=LOOP_KEY)
    internal = loop.internal(ret["id"])
    assert [(a["action"], a["ok"]) for a in internal["actions"]] == [(action, True)]  # the ledger counts it
    assert loop.wait_state(ret["id"], applied_state) == applied_state
    if action == "note":
        assert [n["content"] for n in internal["notes"]] == ["Received in full"]


@pytest.mark.parametrize("effect", EFFECTS)
@pytest.mark.parametrize("action", LOOP_ACTIONS)
def test_loop_fault_before_the_call_applies_nothing(loop_server, quiet, action, effect):
    loop = Loop(loop_server.url)
    ret = loop.new_return()
    suffix, body, _ = LOOP_ACTIONS[action]
    loop.fault(match={"method": "POST", "path": f"/warehouse/return/*/{action}"}, times=1, **EFFECTS[effect][0])
    path = suffix.format(line=ret["line_items"][0]["line_item_id"])
    call("POST", f"{loop.url}/api/v1/warehouse/return/{ret['id']}{path}", EFFECTS[effect][1],
         json=body, headers=LOOP_KEY)
    if effect == "timeout":
        time.sleep(HANG_S + 0.1)  # the held request has ended by now, still without touching the return
    internal = loop.internal(ret["id"])
    assert internal["actions"] == [] and internal["notes"] == [] and internal["processing_pending"] == 0
    assert internal["state"] == "open" and len(internal["line_items"]) == 2


def test_loop_after_drop_cuts_a_read_mid_answer(loop_server, quiet):
    loop = Loop(loop_server.url)
    ret = loop.new_return()
    loop.fault(match={"path": "/warehouse/return/details"}, after=True, drop=True, times=1)
    url = f"{loop.url}/api/v1/warehouse/return/details?return_id={ret['id']}"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # status and headers came, the body did not
        requests.get(url, headers=LOOP_KEY, timeout=READ_TIMEOUT)
    assert requests.get(url, headers=LOOP_KEY, timeout=READ_TIMEOUT).json()["id"] == ret["id"]


def test_loop_after_faults_answer_html_and_retry_after(loop_server):
    loop = Loop(loop_server.url)
    ret = loop.new_return()
    loop.fault(match={"path": "*/flag"}, after=True, status=502, html=True, retry_after=7, times=1)
    resp = requests.post(f"{loop.url}/api/v1/warehouse/return/{ret['id']}/flag", headers=LOOP_KEY, timeout=5)
    assert (resp.status_code, resp.headers["Retry-After"]) == (502, "7") and "HTTP Status 502" in resp.text
    assert loop.internal(ret["id"])["state"] == "review"


# --- RLM --------------------------------------------------------------------------------------------

def ra_body(ref: str) -> dict:
    return {"division_number": 10, "warehouse_number": 1, "external_ref": ref,
            "lines": [{"line_number": 1, "upc": BLUE_S, "qty_authorized": 2, "unit_price": "88.00",
                       "reason_code": "TOO_SMALL"}]}


class Rlm:
    def __init__(self, url: str):
        self.url = url
        self.api = f"{url}{RLM_BASE}"
        requests.post(f"{url}/_sim/reset", timeout=5).raise_for_status()

    def create(self, ref: str = "loop-1", transmit: bool = False) -> int:
        ra = requests.post(f"{self.api}/return-authorizations", json=ra_body(ref), headers=RLM_AUTH, timeout=5)
        number = ra.json()["ra_number"]
        if transmit:
            requests.post(f"{self.api}/return-authorizations/{number}/transmit", headers=RLM_AUTH, timeout=5)
        return number

    def fault(self, **rule) -> None:
        requests.post(f"{self.url}/_sim/faults", json=rule, timeout=5).raise_for_status()

    def statuses(self) -> dict[str, str]:
        found = requests.get(f"{self.api}/return-authorizations", headers=RLM_AUTH, timeout=5).json()["data"]
        return {ra["external_ref"]: ra["status"] for ra in found}


# call -> (path, JSON body, needs an RA that is (None: none, False: open, True: transmitted), status once applied)
RLM_CALLS = {
    "create": ("/return-authorizations", ra_body("new"), None, "OPEN"),
    "transmit": ("/return-authorizations/{ra}/transmit", None, False, "TRANSMITTED"),
    "close": ("/return-authorizations/{ra}/close", {"close_reason": "LOOP_PROCESSED"}, True, "CLOSED"),
    "cancel": ("/return-authorizations/{ra}/cancel", None, False, "CANCELLED"),
}


def _rlm_call(rlm: Rlm, name: str, effect: str, after: bool) -> tuple[str, str]:
    """Set up the RA the call needs, fault the call, send it; (external_ref, status before)."""
    path, body, transmitted, _ = RLM_CALLS[name]
    ra = None if transmitted is None else rlm.create("loop-1", transmit=transmitted)
    ref = "new" if ra is None else "loop-1"
    before = rlm.statuses().get(ref)
    rlm.fault(match={"method": "POST", "path": path.replace("{ra}", "*")}, after=after, times=1,
              **EFFECTS[effect][0])
    call("POST", rlm.api + path.format(ra=ra), EFFECTS[effect][1], json=body, headers=RLM_AUTH)
    return ref, before


@pytest.mark.parametrize("effect", EFFECTS)
@pytest.mark.parametrize("name", RLM_CALLS)
def test_rlm_fault_after_the_call_applies_it(rlm_server, quiet, name, effect):
    rlm = Rlm(rlm_server.url)
    ref, _ = _rlm_call(rlm, name, effect, after=True)
    assert rlm.statuses()[ref] == RLM_CALLS[name][3]


@pytest.mark.parametrize("effect", EFFECTS)
@pytest.mark.parametrize("name", RLM_CALLS)
def test_rlm_fault_before_the_call_applies_nothing(rlm_server, quiet, name, effect):
    rlm = Rlm(rlm_server.url)
    ref, before = _rlm_call(rlm, name, effect, after=False)
    if effect == "timeout":
        time.sleep(HANG_S + 0.1)
    assert rlm.statuses().get(ref) == before


def test_rlm_after_code0_refuses_what_it_did(rlm_server):
    """`after` with `code0`: RLM says no (HTTP 200, code 0), yet the RA exists."""
    rlm = Rlm(rlm_server.url)
    rlm.fault(match={"method": "POST", "path": "/return-authorizations"}, after=True, code0="Invalid Warehouse")
    resp = requests.post(f"{rlm.api}/return-authorizations", json=ra_body("x"), headers=RLM_AUTH, timeout=5)
    assert (resp.status_code, resp.json()) == (200, {"code": 0, "description": "Invalid Warehouse"})
    assert rlm.statuses() == {"x": "OPEN"}


@pytest.mark.parametrize("rule, field", [
    ({"after": "yes"}, "after"), ({"drop": 1}, "drop"), ({"status": 99}, "status"), ({"status": True}, "status"),
    ({"latency_ms": -1}, "latency_ms"), ({"probability": 1.5}, "probability"), ({"times": "2"}, "times"),
    ({"match": {"path": 3}}, "match"), ({"match": {"verb": "GET"}}, "match"), ({"aftr": True}, "aftr"),
])
def test_bad_fault_rules_are_refused_by_both(loop_server, rlm_server, rule, field):
    Loop(loop_server.url), Rlm(rlm_server.url)  # reset both
    loop = requests.post(f"{loop_server.url}/_sim/faults", json=rule, timeout=5)
    assert loop.status_code == 422 and field in loop.json()["errors"]
    rlm = requests.post(f"{rlm_server.url}/_sim/faults", json=rule, timeout=5)
    assert (rlm.status_code, rlm.json()) == (400, {"code": 0, "description": f"Invalid Parameter {field}"})
    assert requests.post(f"{loop_server.url}/_sim/faults", json={"rules": []}, timeout=5).json()["rules"] == []
    assert requests.get(f"{rlm_server.url}/_sim/faults", timeout=5).json()["data"] == []
