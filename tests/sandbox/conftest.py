"""A real HTTP webhook receiver shared by the Loop sandbox tests."""
from __future__ import annotations

import json
import threading
import time

import pytest
from flask import Flask, request

from sandbox.common import ServerThread


class Receiver:
    """A real HTTP endpoint recording raw bodies and headers; answers from a script, then 200."""

    def __init__(self):
        self.hits = []
        self.script = []  # (status, headers) to answer with, in order
        self._lock = threading.Lock()
        app = Flask("receiver")
        app.add_url_rule("/hook/<name>", view_func=self._hook, methods=["POST"])
        self.server = ServerThread(app).start()

    def _hook(self, name):
        with self._lock:
            self.hits.append({"name": name, "body": request.get_data(), "headers": dict(request.headers),
                              "at": time.monotonic()})
            status, headers = self.script.pop(0) if self.script else (200, {})
        return "", status, headers

    def url(self, name="all"):
        return f"{self.server.url}/hook/{name}"

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.hits) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.hits) >= count, f"got {len(self.hits)} webhooks, wanted {count}"
        return self.hits

    def payloads(self):
        return [json.loads(hit["body"]) for hit in self.hits]


@pytest.fixture(scope="module")
def shared_receiver():
    r = Receiver()
    yield r
    r.server.stop()


@pytest.fixture
def receiver(shared_receiver):
    """One server for the module (stopping one takes 0.5 s); each test starts with a clean record."""
    shared_receiver.hits.clear()
    shared_receiver.script.clear()
    return shared_receiver
