"""Webhook subscriptions (docs/loop-api.md §3.6) and signed, retried delivery (§5.2) from a
background thread. Section numbers (§) refer to docs/loop-api.md."""
from __future__ import annotations

import base64
import collections
import datetime as dt
import email.utils
import hashlib
import heapq
import hmac
import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from sandbox.loop.state import Dice, Invalid, Settings, draw_seconds, field_error

TOPIC_TRIGGERS = {
    "return": ("return.created", "return.updated", "return.closed"),
    "label": ("label.created", "label.updated", "label.requested", "label.closed"),
    "return.processing": ("return.processing.failed",),
    "restock": ("restock.requested",),
}
# Loop's message omits return.processing although it accepts that topic (§3.6, §5.1).
TOPIC_MESSAGE = "Must be one of the following values:return,label,restock"

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}  # plus connection errors and timeouts
MAX_ATTEMPTS = 6  # the first try and 5 retries
MAX_RETRY_AFTER_S = 30 * 60
LOG_SIZE = 5000


def encode(payload: dict[str, Any]) -> bytes:
    """Loop's wire form: compact JSON with `/` escaped as `\\/` (§5.2)."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- subscriptions --------------------------------------------------------------------------------

class Subscriptions:
    """Webhook = {id, shop_id, topic, trigger, url, status}; one per (topic, trigger, url)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._hooks: dict[int, dict[str, Any]] = {}
            self._ids = itertools.count(1)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(h) for h in self._hooks.values()]

    def create(self, data: Any) -> dict[str, Any]:
        with self._lock:
            fields = self._validated(data, current_id=None)
            hook = {"id": next(self._ids), "shop_id": self._settings["shop_id"], **fields,
                    "status": fields.get("status", "inactive")}  # Loop's default: send "active" explicitly
            self._hooks[hook["id"]] = hook
            return dict(hook)

    def update(self, hook_id: int, data: Any) -> bool:
        """False when there is no such webhook; raises Invalid on a bad body."""
        with self._lock:
            if hook_id not in self._hooks:
                return False
            self._hooks[hook_id].update(self._validated(data, current_id=hook_id))
            return True

    def delete(self, hook_id: int) -> bool:
        with self._lock:
            return self._hooks.pop(hook_id, None) is not None

    def active_urls(self, trigger: str) -> list[str]:
        with self._lock:
            return [h["url"] for h in self._hooks.values() if h["trigger"] == trigger and h["status"] == "active"]

    def _validated(self, data: Any, current_id: int | None) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise Invalid("The request body must be a JSON object.")
        topic, trigger, url = data.get("topic"), data.get("trigger"), data.get("url")
        if not isinstance(topic, str) or topic not in TOPIC_TRIGGERS or topic in self._settings["refused_topics"]:
            raise Invalid(TOPIC_MESSAGE, {})
        if trigger not in TOPIC_TRIGGERS[topic]:
            raise field_error("trigger", "The selected trigger is invalid.")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise field_error("url", "The url must be a valid URL.")
        if data.get("status", "inactive") not in ("active", "inactive"):
            raise field_error("status", "The selected status is invalid.")
        for hook in self._hooks.values():
            if hook["id"] != current_id and (hook["topic"], hook["trigger"], hook["url"]) == (topic, trigger, url):
                raise field_error("url", "A webhook for this topic, trigger and url already exists.")
        fields = {"topic": topic, "trigger": trigger, "url": url}
        if "status" in data:
            fields["status"] = data["status"]
        return fields


# --- delivery -------------------------------------------------------------------------------------

@dataclass
class Delivery:
    id: int
    trigger: str
    return_id: int | None
    url: str
    body: bytes
    copy: int
    outcome: str = "pending"  # pending -> delivered | failed
    reason: str | None = None
    held_s: float | None = None  # first attempt held back this long (`webhook_delay`)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "trigger": self.trigger, "return_id": self.return_id, "url": self.url,
                "copy": self.copy, "outcome": self.outcome, "reason": self.reason, "held_s": self.held_s,
                "attempts": [dict(a) for a in self.attempts], "body": self.body.decode()}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class Dispatcher:
    """At-least-once delivery: a heap of due attempts worked by one thread, so requests never wait on it."""

    def __init__(self, settings: Settings, dice: Dice):
        self._settings = settings
        self._dice = dice
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Delivery]] = []  # (monotonic due time, seq, delivery)
        self._log: collections.deque[Delivery] = collections.deque(maxlen=LOG_SIZE)
        self._ids = itertools.count(1)
        self._busy = False
        self._stopping = False
        self._rng = random.Random()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="loop-sandbox-webhooks", daemon=True)
        self._thread.start()

    def send(self, trigger: str, return_id: int | None, url: str, body: bytes) -> None:
        with self._cond:
            for copy in range(1, self._settings["duplicate_deliveries"] + 1):
                delivery = Delivery(next(self._ids), trigger, return_id, url, body, copy)
                delivery.held_s = self._hold(delivery)
                self._log.append(delivery)
                self._schedule(delivery, delivery.held_s or 0.0)

    def _hold(self, delivery: Delivery) -> float | None:
        """Seconds to hold this delivery back (`webhook_delay`), while later ones go out on time."""
        spec = self._settings["webhook_delay"]
        if spec is None or self._dice.chance("webhook_held", delivery.id) >= spec.get("probability", 1.0):
            return None
        return round(draw_seconds(spec, self._dice.rng("webhook_held_s", delivery.id)), 3)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._cond:
            return [d.view() for d in self._log]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight (tests and demos); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def clear(self) -> None:
        with self._cond:
            self._due.clear()
            self._log.clear()
            self._ids = itertools.count(1)  # so seeded draws keyed by delivery id repeat after a reset
            self._cond.notify_all()

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=self._settings["webhook_timeout_s"] + 1)
        self._session.close()

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, delivery.id, delivery))
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                delivery = self._next_due()
                if delivery is None:
                    return
                self._busy = True
            try:
                self._attempt(delivery)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next_due(self) -> Delivery | None:
        """Wait (holding the condition) for the next due delivery; None when shutting down."""
        while not self._stopping:
            wait = self._due[0][0] - time.monotonic() if self._due else None
            if wait is not None and wait <= 0:
                return heapq.heappop(self._due)[2]
            self._cond.wait(wait)
        return None

    def _attempt(self, delivery: Delivery) -> None:
        status, error, retry_after = self._post(delivery)
        attempt = {"attempt": len(delivery.attempts) + 1, "at": dt.datetime.now(dt.UTC).isoformat(),
                   "status_code": status, "error": error, "retry_in_s": None}
        with self._cond:
            delivery.attempts.append(attempt)
            self._decide(delivery, attempt, status, retry_after)

    def _decide(self, delivery: Delivery, attempt: dict[str, Any], status: int | None,
                retry_after: float | None) -> None:
        if status is not None and 200 <= status < 300:
            delivery.outcome = "delivered"
        elif status is not None and status not in RETRY_STATUSES:
            self._fail(delivery, f"HTTP {status} is not retried")
        elif attempt["attempt"] >= MAX_ATTEMPTS:
            self._fail(delivery, "retries exhausted")
        elif retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            self._fail(delivery, f"Retry-After {retry_after:.0f}s is longer than 30 min")
        else:
            delay = retry_after if retry_after is not None else self._backoff(attempt["attempt"])
            attempt["retry_in_s"] = round(delay, 3)
            self._schedule(delivery, delay)

    @staticmethod
    def _fail(delivery: Delivery, reason: str) -> None:
        delivery.outcome, delivery.reason = "failed", reason

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with up to 50% jitter."""
        return self._settings["webhook_retry_base_s"] * 2 ** (attempt - 1) * (1 + self._rng.random() / 2)

    def _post(self, delivery: Delivery) -> tuple[int | None, str | None, float | None]:
        headers = {"Content-Type": "application/json", "User-Agent": "Loop-Webhooks/sandbox",
                   "X-Loop-Signature": sign(delivery.body, self._settings["webhook_secret"])}
        try:
            response = self._session.post(delivery.url, data=delivery.body, headers=headers,
                                          timeout=self._settings["webhook_timeout_s"], allow_redirects=False)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        return response.status_code, None, _retry_after(response.headers.get("Retry-After"))


class Webhooks:
    """Subscriptions plus dispatcher: `emit` sends one event to every active subscription for its trigger."""

    def __init__(self, settings: Settings, dice: Dice):
        self.subscriptions = Subscriptions(settings)
        self.dispatcher = Dispatcher(settings, dice)

    def emit(self, trigger: str, payload: dict[str, Any]) -> None:
        urls = self.subscriptions.active_urls(trigger)
        if not urls:
            return
        body = encode(payload)
        return_id = payload.get("id", payload.get("return_id"))
        for url in urls:
            self.dispatcher.send(trigger, int(return_id) if return_id is not None else None, url, body)

    def reset(self) -> None:
        self.subscriptions.reset()
        self.dispatcher.clear()

    def shutdown(self) -> None:
        self.dispatcher.shutdown()
