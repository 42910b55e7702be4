"""Pieces both sandboxes share: serving a Flask app on a port, and fault rules."""
from __future__ import annotations

import fnmatch
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server


class ServerThread:
    """A real threaded HTTP server for a WSGI app, in a background thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self._server = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def serve_forever(app, host: str, port: int) -> None:
    """Run an app in the foreground (used by `python -m sandbox.loop` / `sandbox.rlm`)."""
    make_server(host, port, app, threaded=True).serve_forever()


@dataclass
class FaultRule:
    """One fault rule: which requests it matches and what it does to them.

    `match` holds optional `method` and a glob `path` (matched against the request path, and
    also against the path relative to the API base so `/return-authorizations*` works).
    `times` limits how often it fires (None = always); `probability` makes it random.
    """

    match: dict[str, str]
    latency_ms: int = 0
    status: int | None = None
    html: bool = False
    timeout: bool = False
    code0: str | None = None
    times: int | None = None
    probability: float = 1.0
    retry_after: int | None = None
    fired: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FaultRule":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "fired"}
        known.setdefault("match", {})
        return cls(**known)

    def matches(self, method: str, paths: list[str]) -> bool:
        want_method = self.match.get("method")
        if want_method and want_method.upper() != method.upper():
            return False
        pattern = self.match.get("path")
        if pattern and not any(fnmatch.fnmatchcase(p, pattern) for p in paths):
            return False
        return True


@dataclass
class FaultBook:
    """Thread-safe list of fault rules; `pick` returns the rule to apply to a request, if any."""

    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, data: dict[str, Any]) -> FaultRule:
        rule = FaultRule.from_json(data)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def seed(self, seed: int) -> None:
        self.rng.seed(seed)

    def pick(self, method: str, paths: list[str]) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if not rule.matches(method, paths):
                    continue
                if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
        return None


def sleep_for(rule: FaultRule, client_timeout_s: float = 120.0) -> None:
    """Apply a rule's latency; a `timeout` rule hangs past any sane client read timeout."""
    if rule.timeout:
        time.sleep(client_timeout_s)
    elif rule.latency_ms:
        time.sleep(rule.latency_ms / 1000.0)


HTML_ERROR_PAGE = (
    "<html><head><title>Service Unavailable</title></head>"
    "<body><h1>HTTP Status {status}</h1><p>Apache Tomcat</p></body></html>"
)
