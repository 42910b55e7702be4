"""The Loop and RLM clients never follow a redirect, so their credentials never reach where a
Location points: not another server (requests keeps Loop's X-Authorization header across hosts),
not another path of the same one (requests keeps Basic auth there). A redirect is a FinalError
that names where it pointed, and it is not retried."""
from __future__ import annotations

import base64

import pytest
from flask import Flask, jsonify, redirect, request

from integration.errors import FinalError
from integration.loop.client import LoopClient
from integration.rlm.client import JsonTransport, RlmClient
from sandbox.common import ServerThread

LOOP_KEY = "loop-key-3c9e1f"
RLM_KEY = "rlm-key-8a2d47"
SECRETS = (LOOP_KEY, RLM_KEY, base64.b64encode(f"demo:{RLM_KEY}".encode()).decode())


def recording_app(name: str, seen: list, redirect_to=None) -> Flask:
    """Records each request's headers; redirects every path but /landed/... when told where."""
    app = Flask(name)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def anything(path):
        seen.append({"path": f"/{path}", "headers": dict(request.headers)})
        if redirect_to is not None and not path.startswith("landed"):
            return redirect(redirect_to(path), code=302)
        return jsonify({"code": 1, "data": [], "id": 1})  # a plausible answer from either API

    return app


@pytest.fixture(scope="module")
def servers():
    """`origin` redirects to `elsewhere` (another port), `same` to another path of its own."""
    seen: dict[str, list] = {"origin": [], "elsewhere": [], "same": []}
    elsewhere = ServerThread(recording_app("elsewhere", seen["elsewhere"])).start()
    origin = ServerThread(recording_app("origin", seen["origin"],
                                        redirect_to=lambda path: f"{elsewhere.url}/{path}?token=abc")).start()
    same = ServerThread(recording_app("same", seen["same"], redirect_to=lambda path: f"/landed/{path}")).start()
    yield {"origin": origin, "elsewhere": elsewhere, "same": same}, seen
    for server in (origin, elsewhere, same):
        server.stop()


CALLS = {  # name: (the call, given the base URL)
    "loop: read a return": lambda url: LoopClient(url, LOOP_KEY, read_retries=2, timeout=(2, 5)).get_return("1"),
    "loop: process a return": lambda url: LoopClient(url, LOOP_KEY, timeout=(2, 5)).process("1"),
    "rlm: warehouses": lambda url: RlmClient(JsonTransport(url, 90, "demo", RLM_KEY, retries=2,
                                                           timeout=(2, 5))).warehouses(),
    "rlm: create an RA": lambda url: RlmClient(JsonTransport(url, 90, "demo", RLM_KEY,
                                                             timeout=(2, 5))).create_ra({"x": 1}),
}


def leaked(requests_seen: list) -> list:
    return [r for r in requests_seen if any(secret in value for value in r["headers"].values()
                                            for secret in SECRETS)]


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_redirect_to_another_server_is_not_followed(servers, call):
    running, seen = servers
    for requests_seen in seen.values():
        requests_seen.clear()
    with pytest.raises(FinalError) as refused:
        call(running["origin"].url)
    assert seen["elsewhere"] == []  # so neither the key nor Basic auth reached it
    assert len(seen["origin"]) == 1  # not retried
    message = refused.value.message
    assert (f"answered a redirect to {running['elsewhere'].url} (HTTP 302); not followed: configure "
            "the right base URL") in message
    assert "token=abc" not in message and refused.value.status == 302


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_redirect_to_another_path_of_the_same_server_is_not_followed(servers, call):
    running, seen = servers
    seen["same"].clear()
    with pytest.raises(FinalError, match="not followed"):
        call(running["same"].url)
    assert [r["path"] for r in seen["same"]] != [] and leaked(seen["same"][1:]) == []
    assert not any(r["path"].startswith("/landed") for r in seen["same"])
