"""Pieces both sandboxes share: serving a Flask app on a port, and fault rules."""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, request
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

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def serve_forever(app, host: str, port: int) -> None:
    """Run an app in the foreground (used by `python -m sandbox.loop` / `sandbox.rlm`)."""
    make_server(host, port, app, threaded=True).serve_forever()


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (Python's JSON reader also takes NaN and Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class BadFaultRule(ValueError):
    """A fault rule (or seed) that cannot be used; each sandbox answers it with its own 4xx body."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name} {message}")
        self.field = field_name
        self.message = message


def _is_match(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) <= {"method", "path"}
            and all(isinstance(v, str) for v in value.values()))


MAX_LATENCY_MS = 600_000  # ten minutes: a longer sleep only ties up a server thread
RULE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "match": (_is_match, "must be an object with optional string fields method and path"),
    "latency_ms": (lambda v: is_number(v) and 0 <= v <= MAX_LATENCY_MS, "must be a number from 0 to 600000"),
    "status": (lambda v: v is None or (is_int(v) and 200 <= v <= 599), "must be null or a status from 200 to 599"),
    "html": (lambda v: isinstance(v, bool), "must be a boolean"),
    "timeout": (lambda v: isinstance(v, bool), "must be a boolean"),
    "drop": (lambda v: isinstance(v, bool), "must be a boolean"),
    "after": (lambda v: isinstance(v, bool), "must be a boolean"),
    "code0": (lambda v: v is None or isinstance(v, str), "must be null or a string"),
    "times": (lambda v: v is None or (is_int(v) and v >= 0), "must be null or an integer >= 0"),
    "probability": (lambda v: is_number(v) and 0 <= v <= 1, "must be a number from 0 to 1"),
    "retry_after": (lambda v: v is None or (is_int(v) and v >= 0), "must be null or an integer >= 0"),
    "fired": (lambda v: True, ""),  # read-only counter: ignored, so a listed rule can be posted back
}


@dataclass
class FaultRule:
    """One fault rule: which requests it matches and what it does to them.

    `match` holds optional `method` and a glob `path` (matched against the request path, and
    also against the path relative to the API base so `/return-authorizations*` works).
    `times` limits how often it fires (None = always); `probability` makes it random.

    By default (`after: false`) the fault replaces the call: nothing is applied. `latency_ms`
    delays the call, `timeout` holds the answer past the client's read timeout (`timeout_hang_s`),
    `drop` closes the connection, `status` answers that status. With `after: true` the call is
    handled normally first (state changes, the ledger counts it) and then the same effects hit
    its answer: the client cannot tell whether the work happened.
    """

    match: dict[str, str]
    latency_ms: float = 0
    status: int | None = None
    html: bool = False
    timeout: bool = False
    drop: bool = False
    after: bool = False
    code0: str | None = None
    times: int | None = None
    probability: float = 1.0
    retry_after: int | None = None
    fired: int = 0

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        """A rule from its JSON form; raises BadFaultRule naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise BadFaultRule("rule", "must be an object")
        for name, value in data.items():
            check = RULE_CHECKS.get(name)
            if check is None:
                raise BadFaultRule(name, "is not a fault rule field")
            if not check[0](value):
                raise BadFaultRule(name, check[1])
        return cls(**{k: v for k, v in data.items() if k != "fired"} | {"match": data.get("match", {})})

    def matches(self, method: str, paths: list[str]) -> bool:
        want_method = self.match.get("method")
        if want_method and want_method.upper() != method.upper():
            return False
        pattern = self.match.get("path")
        return not pattern or any(fnmatch.fnmatchcase(p, pattern) for p in paths)

    def view(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FaultBook:
    """Thread-safe list of fault rules; `pick` returns the rule to apply to a request, if any."""

    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_all(self, data: list[Any], seed: Any = None) -> None:
        """Add rules and reseed (unless `seed` is None), all or nothing: BadFaultRule changes nothing."""
        rules = [FaultRule.from_json(item) for item in data]
        if seed is not None and not is_int(seed):
            raise BadFaultRule("seed", "must be an integer")
        with self._lock:
            self.rules.extend(rules)
            if seed is not None:
                self.rng.seed(seed)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.view() for rule in self.rules]

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


# An app's error answer for a rule's `status` (and RLM's `code0`); None when the rule sets neither.
Answer = Callable[[FaultRule], Response | None]


def fault_before(rule: FaultRule, hang_s: float, answer: Answer) -> Response | None:
    """Apply a rule before the call. None lets the call go ahead (a latency-only rule)."""
    pause(rule, hang_s)
    if rule.drop:
        return drop_connection(Response(status=502), partial=False)
    if rule.timeout and rule.status is None and rule.code0 is None:
        # The client gave up long ago; the gateway's 504 says the call never ran.
        rule = dataclasses.replace(rule, status=504)
    return answer(rule)


def fault_after(rule: FaultRule, hang_s: float, answer: Answer, response: Response) -> Response:
    """Apply an `after` rule to the answer of a call that has been handled."""
    pause(rule, hang_s)
    response = answer(rule) or response
    return drop_connection(response, partial=True) if rule.drop else response


def pause(rule: FaultRule, hang_s: float) -> None:
    """A `timeout` rule holds the answer `hang_s` (past the client's read timeout); else its latency."""
    time.sleep(hang_s if rule.timeout else rule.latency_ms / 1000.0)


def drop_connection(response: Response, partial: bool) -> Response:
    """Close the client's connection without a complete answer.

    With `partial`, the status line, headers and half the body go out first (an answer cut in
    the middle); without, or when the answer has no body, nothing does. The server's own write of
    `response` then fails with a broken pipe, which werkzeug treats as a client that went away:
    no traceback, the server thread lives on.
    """
    sock = request.environ.get("werkzeug.socket")
    body = response.get_data()
    if sock is None:  # Flask's test client has no socket: an answer promising more than it holds
        response.set_data(body[: len(body) // 2])
        response.headers["Content-Length"] = str(len(body) + 1)
        return response
    if partial and body and request.method != "HEAD":
        sock.sendall(_head(response) + body[: len(body) // 2])
    sock.shutdown(socket.SHUT_RDWR)
    return response


def _head(response: Response) -> bytes:
    headers = response.get_wsgi_headers(request.environ)
    lines = [f"HTTP/1.1 {response.status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


HTML_ERROR_PAGE = (
    "<html><head><title>Service Unavailable</title></head>"
    "<body><h1>HTTP Status {status}</h1><p>Apache Tomcat</p></body></html>"
)
