"""What every task leaves behind for operators: JSON log lines naming the return, and metrics.

Hooked in through Celery signals so the tasks stay thin. Metrics live in Redis rather than in
process memory: workers run as many processes on many machines, and whichever web process
Prometheus scrapes must report all of them (see web/metrics.py for the reading side).
"""
from __future__ import annotations

import logging
import time
from contextvars import Token
from functools import partial

import redis
from celery import signals
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from integration.infra import logs, redis_pool
from integration.store.models import Return, WebhookEvent

from . import runtime
from .names import STEP_TASK_NAMES

log = logging.getLogger(__name__)

EVENT_TASK = STEP_TASK_NAMES["handle_event"]
RETURN_TASKS = {name for step, name in STEP_TASK_NAMES.items() if step != "handle_event"}


class MetricStore:
    """Counters and a duration histogram as Redis hashes, shared by every process."""

    TASKS = "metrics:task_seconds"
    API_ERRORS = "metrics:api_errors"
    WAITS = "metrics:ratelimit_wait_seconds"
    BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

    def __init__(self, client: redis.Redis):
        self.client = client

    def record_task(self, task: str, state: str, seconds: float) -> None:
        # One bucket per observation; read() makes them cumulative as Prometheus wants.
        le = next((str(b) for b in self.BUCKETS if seconds <= b), "+Inf")
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.TASKS, f"{task}|{state}|{le}", 1)
        pipe.hincrbyfloat(self.TASKS, f"{task}|{state}|sum", seconds)
        pipe.hincrby(self.TASKS, f"{task}|{state}|count", 1)
        pipe.execute()

    def count_api_error(self, system: str, code: str) -> None:
        self.client.hincrby(self.API_ERRORS, f"{system}|{code}", 1)

    def add_wait(self, system: str, seconds: float) -> None:
        self.client.hincrbyfloat(self.WAITS, system, seconds)

    def read(self) -> dict:
        tasks: dict[tuple[str, str], dict] = {}
        for field, value in self.client.hgetall(self.TASKS).items():
            task, state, part = _text(field).split("|")
            entry = tasks.setdefault((task, state), {"le": {}, "sum": 0.0, "count": 0})
            if part in ("sum", "count"):
                entry[part] = float(value)
            else:
                entry["le"][part] = int(value)
        for entry in tasks.values():
            running, buckets = 0, []
            for le in [str(b) for b in self.BUCKETS] + ["+Inf"]:
                running += entry["le"].get(le, 0)
                buckets.append((le, running))
            entry["buckets"] = buckets
        return {
            "tasks": tasks,
            "api_errors": {tuple(_text(f).split("|")): int(v)
                           for f, v in self.client.hgetall(self.API_ERRORS).items()},
            "waits": {_text(f): float(v) for f, v in self.client.hgetall(self.WAITS).items()},
        }


def _text(value: bytes | str) -> str:
    """A hash field as text: our clients do not decode responses, so it comes back as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def store() -> MetricStore:
    """On the process's shared client (integration.infra.redis_pool): no connection of its own."""
    return MetricStore(redis_pool.client(runtime.redis_url()))


# --- logging -------------------------------------------------------------------------------
@signals.setup_logging.connect
def _setup_logging(loglevel=None, **_):
    """Celery leaves logging to us when this signal has a receiver: JSON on stderr."""
    logs.configure(loglevel)


# --- per task ------------------------------------------------------------------------------
_running: dict[str, tuple[Token, float, bool]] = {}


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, args=None, **_):
    subject = _subject(task.name, args or ())
    token = logs.bind(task=task.name, task_id=task_id, **subject)
    # A delivery not read yet names no return: its task's last line looks again (see below).
    _running[task_id] = (token, time.monotonic(), task.name == EVENT_TASK and not subject.get("loop_return_id"))
    _watch_api_errors()


@signals.task_success.connect
@signals.task_retry.connect
@signals.task_failure.connect
def _name_what_was_read(sender=None, **_):
    """A delivery's task has read its body by now: the row names its return (if it was usable),
    bound before Celery logs the outcome. The postrun's unbind drops this binding too (it
    restores the fields as they were before the task)."""
    request = getattr(sender, "request", None)
    entry = _running.get(getattr(request, "id", None) or "")
    if request is None or entry is None or not entry[2]:
        return
    token, started, _unread = entry
    logs.bind(**_subject(sender.name, request.args or ()))
    _running[request.id] = (token, started, False)


@signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_):
    token, started, _unread = _running.pop(task_id, (None, time.monotonic(), False))
    seconds = time.monotonic() - started
    try:
        log.info("task %s %s in %.3f s", task.name, state, seconds,
                 extra={"state": state, "duration_s": round(seconds, 3)})
        store().record_task(task.name, state or "UNKNOWN", seconds)
        _record_waits()
    except redis.RedisError as exc:  # metrics must never fail the work they measure
        log.warning("metrics not recorded: %s", exc)
    finally:
        if token is not None:
            logs.unbind(token)


def _subject(task_name: str, args) -> dict:
    """merchant and loop_return_id for a task that received an event or return id."""
    if not args or task_name not in RETURN_TASKS | {EVENT_TASK}:
        return {}
    target = args[0]
    table: type[WebhookEvent] | type[Return]
    if task_name == EVENT_TASK:
        table, fields = WebhookEvent, {"event_id": target}
    else:
        table, fields = Return, {"return_id": target}
    try:
        with runtime.sessions()() as session:
            row = session.execute(select(table.merchant, table.loop_return_id)
                                  .where(table.id == target)).first()
    except SQLAlchemyError:
        row = None  # the task itself will meet (and report) the database problem
    if row is not None:
        fields.update(merchant=row.merchant, loop_return_id=row.loop_return_id)
    return fields


# --- API errors and rate-limit waits, read from the task layer's own clients -----------------
def _on_response(system: str, response, *_, **__):
    if response.status_code >= 400:
        try:
            store().count_api_error(system, str(response.status_code))
        except redis.RedisError as exc:
            log.warning("metrics not recorded: %s", exc)


_HOOKS = {system: partial(_on_response, system) for system in ("loop", "rlm")}


def _clients():
    from . import tasks  # not at import time: workers.celery_app imports this module first

    ctx = tasks.context()
    for name in ctx.merchants:
        merchant = ctx.merchant(name)
        yield name, ctx.loop(merchant), ctx.rlm(merchant)


def _watch_api_errors() -> None:
    """A `requests` response hook on each client's session counts every 4xx/5xx answer."""
    for _, loop, rlm in _clients():
        for system, session in (("loop", loop.http), ("rlm", getattr(rlm.t, "http", None))):
            if session is not None and _HOOKS[system] not in session.hooks["response"]:
                session.hooks["response"].append(_HOOKS[system])


_waited: dict[str, float] = {}


def _record_waits() -> None:
    """The Loop token bucket counts its waits per process; publish what is new since last time."""
    for name, loop, _ in _clients():
        waited = getattr(loop.limiter, "waited_s", 0.0)
        if waited > _waited.get(name, 0.0):
            store().add_wait("loop", waited - _waited.get(name, 0.0))
            _waited[name] = waited


# --- Flower ----------------------------------------------------------------------------------
@signals.before_task_publish.connect
def _readable_args(sender=None, headers=None, body=None, **_):
    """Flower shows `argsrepr`: say what the bare id is ("return_id=42", not "[42]")."""
    args = body[0] if isinstance(body, tuple) and body else None
    if headers is None or not args:
        return
    if sender == EVENT_TASK:
        headers["argsrepr"] = f"event_id={args[0]}"
    elif sender in RETURN_TASKS:
        headers["argsrepr"] = f"return_id={args[0]}"
