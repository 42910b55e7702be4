"""Both sandboxes served over real HTTP, once per module, reset before each test."""
from __future__ import annotations

import time

import pytest
import requests

from integration.loop.client import LoopClient
from integration.rlm.client import JsonTransport, RlmClient
from sandbox.common import ServerThread
from sandbox.loop.app import create_app as create_loop_app
from sandbox.rlm import create_app as create_rlm_app

LOOP_KEY = "contract-key"
RLM_USER, RLM_KEY = "contract", "contract-rlm-key"
TIMEOUT = (2.0, 5.0)
SHORT_TIMEOUT = (1.0, 0.5)  # for hang tests: the sandbox holds a `timeout` fault's answer HANG_S
HANG_S = 1.0


class RecordingSession(requests.Session):
    """A real session that remembers (method, full url) of every request it sends."""

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def send(self, request, **kwargs):
        self.sent.append((request.method, request.url))
        return super().send(request, **kwargs)


class Sim:
    """The sandbox's `/_sim` controls over HTTP."""

    def __init__(self, url: str):
        self.url = url

    def post(self, path: str, json=None) -> dict:
        response = requests.post(f"{self.url}/_sim{path}", json=json, timeout=5)
        assert response.status_code < 300, response.text
        return response.json()

    def get(self, path: str) -> dict:
        return requests.get(f"{self.url}/_sim{path}", timeout=5).json()

    def fault(self, **rule) -> None:
        self.post("/faults", rule)


class LoopSim(Sim):
    def new_return(self, units: int = 2, sku: str = "CB11D10-BLUE-S", **spec) -> dict:
        item = {"sku": sku, "barcode": "099999000054", "price": "88.00", "return_reason": "Too small"}
        return self.post("/returns", {"order_name": "#1001", "line_items": [item] * units, **spec})

    def set_state(self, return_id, state: str) -> None:
        self.post(f"/returns/{return_id}/state", {"state": state})

    def record(self, return_id) -> dict:
        return self.get(f"/returns/{return_id}")

    def wait_state(self, return_id, state: str, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while self.record(return_id)["state"] != state and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.record(return_id)["state"]


class RlmSim(Sim):
    def receive(self, ra_number: int, scenario: str = "exact") -> dict:
        return self.post(f"/companies/90/return-authorizations/{ra_number}/receive", {"scenario": scenario})


@pytest.fixture(scope="module")
def loop_server():
    app = create_loop_app({"api_keys": [LOOP_KEY], "process_delay_s": 0.05, "timeout_hang_s": HANG_S})
    server = ServerThread(app).start()
    yield server
    server.stop()
    app.extensions["loop_sandbox"].shutdown()


@pytest.fixture
def loop_sim(loop_server) -> LoopSim:
    sim = LoopSim(loop_server.url)
    sim.post("/reset")
    return sim


@pytest.fixture
def session():
    with RecordingSession() as s:
        yield s


@pytest.fixture
def loop(loop_sim, session) -> LoopClient:
    return LoopClient(loop_sim.url, LOOP_KEY, timeout=TIMEOUT, session=session)


@pytest.fixture(scope="module")
def rlm_server():
    app = create_rlm_app({"username": RLM_USER, "key": RLM_KEY, "timeout_hang_s": HANG_S})
    server = ServerThread(app).start()
    yield server
    server.stop()


@pytest.fixture
def rlm_sim(rlm_server) -> RlmSim:
    sim = RlmSim(rlm_server.url)
    sim.post("/reset")
    return sim


@pytest.fixture
def rlm(rlm_sim, session) -> RlmClient:
    return RlmClient(JsonTransport(rlm_sim.url, 90, RLM_USER, RLM_KEY, timeout=TIMEOUT, session=session))
