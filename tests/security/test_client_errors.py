"""Errors from the Loop and RLM clients never carry a key: not in the message, the exception's
repr or parsed body, its traceback, or any log record written while it happened. These errors
end up in logs, on the operator pages and in a parked return's reason."""
from __future__ import annotations

import json
import logging
import traceback

import pytest

from integration.errors import UpstreamError
from integration.infra.embedded_redis import free_port
from integration.loop.client import LoopClient
from integration.merchants import demo_merchant_config, parse_merchants
from integration.rlm.client import JsonTransport, RlmClient
from sandbox.common import ServerThread
from sandbox.loop import create_app as loop_app
from sandbox.rlm import create_app as rlm_app

RIGHT = "right-key-7f3a9c21e4"  # what the sandboxes accept
WRONG = "wrong-key-0b58d6ee12"  # what a misconfigured deploy sends


@pytest.fixture(scope="module")
def servers():
    loop = loop_app({"api_keys": [RIGHT]})
    rlm = rlm_app()
    rlm.extensions["rlm_sandbox"].settings["key"] = RIGHT
    running = {"loop": ServerThread(loop).start(), "rlm": ServerThread(rlm).start()}
    yield running
    loop.extensions["loop_sandbox"].shutdown()
    for server in running.values():
        server.stop()


def loop_client(url: str, key: str) -> LoopClient:
    return LoopClient(url, key, timeout=(2.0, 5.0), read_retries=0)


def rlm_client(url: str, key: str) -> RlmClient:
    return RlmClient(JsonTransport(url, 90, "demo", key, timeout=(2.0, 5.0), retries=0))


def everything_said(exc: UpstreamError, caplog) -> str:
    return "\n".join([str(exc), repr(exc), exc.message, json.dumps(exc.body, default=str),
                      "".join(traceback.format_exception(exc)), caplog.text])


CALLS = {  # name: (system, call)
    "loop: read a return": ("loop", lambda url, key: loop_client(url, key).get_return("1")),
    "loop: process a return": ("loop", lambda url, key: loop_client(url, key).process("1")),
    "loop: list webhooks": ("loop", lambda url, key: loop_client(url, key).list_webhooks()),
    "rlm: warehouses": ("rlm", lambda url, key: rlm_client(url, key).warehouses()),
    "rlm: create an RA": ("rlm", lambda url, key: rlm_client(url, key).create_ra({"external_ref": "1"})),
}


@pytest.mark.parametrize("system, call", CALLS.values(), ids=CALLS.keys())
def test_a_401_does_not_carry_the_wrong_key(servers, caplog, system, call):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamError) as info:
        call(servers[system].url, WRONG)
    assert info.value.status == 401
    said = everything_said(info.value, caplog)
    assert WRONG not in said and RIGHT not in said


REFUSED = {name: CALLS[name] for name in ("loop: read a return", "loop: process a return",
                                          "rlm: create an RA")}


@pytest.mark.parametrize("system, call", REFUSED.values(), ids=REFUSED.keys())
def test_a_refusal_does_not_carry_the_right_key(servers, caplog, system, call):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamError) as info:
        call(servers[system].url, RIGHT)  # authenticated, then refused: no such return, bad RA
    assert info.value.status in range(400, 500)
    assert RIGHT not in everything_said(info.value, caplog)


@pytest.mark.parametrize("system, call", CALLS.values(), ids=CALLS.keys())
def test_no_transport_error_carries_the_key(caplog, system, call):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamError) as info:
        call(f"http://127.0.0.1:{free_port()}", RIGHT)  # nothing listens there
    assert info.value.system == system
    assert RIGHT not in everything_said(info.value, caplog)


def test_a_merchants_repr_shows_no_key(monkeypatch):
    monkeypatch.setenv("LOOP_API_KEY", RIGHT)
    monkeypatch.setenv("RLM_KEY", WRONG)
    monkeypatch.setenv("LOOP_WEBHOOK_SECRETS", "secret-one-4455,secret-two-6677")
    merchant = parse_merchants([demo_merchant_config()])["demo"]
    assert merchant.loop_api_key == RIGHT  # the keys are there...
    for shown in (repr(merchant), str(merchant)):  # ...but never shown
        for secret in (RIGHT, WRONG, "secret-one-4455", "secret-two-6677"):
            assert secret not in shown
