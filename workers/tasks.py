"""Celery tasks. Each takes an id, re-reads state in integration.workflow.pipeline, and has an explicit
retry policy: back off on 5xx, timeouts, connection errors and 429; never retry other 4xx.
"""
from __future__ import annotations

import logging
import os
import random

import redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from integration.errors import RetryableError
from integration.infra import redis_pool
from integration.infra.locks import single_run
from integration.infra.ratelimit import TokenBucket, bucket_name
from integration.store import retention
from integration.workflow import maintenance, pipeline
from integration.workflow.context import Context

from . import runtime
from .celery_app import app
from .names import STEP_TASK_NAMES

log = logging.getLogger(__name__)

RETRY_BASE_S = float(os.environ.get("TASK_RETRY_BASE_S", "2"))
# Stays well under the broker's visibility timeout, and under STUCK_AFTER_S so the sweeper
# never mistakes a task waiting for its retry for a lost one.
RETRY_MAX_S = float(os.environ.get("TASK_RETRY_MAX_S", "600"))
MAX_RETRIES = 10
# Conflicts with another worker or a locked database: retry soon.
TRANSIENT = (RetryableError, StaleDataError, OperationalError, redis.ConnectionError)

_context: Context | None = None


def enqueue(step: str, target_id) -> None:
    app.send_task(STEP_TASK_NAMES[step], args=[target_id])


def publish_events(event_ids: list[int]) -> None:
    """Hand stored inbox rows to the workers: one message for a row, one for a batch of them."""
    if len(event_ids) == 1:
        enqueue("handle_event", event_ids[0])
    else:
        app.send_task("inbox.dispatch_events", args=[event_ids])


def context() -> Context:
    global _context
    if _context is None:
        _context = Context(settings=runtime.settings(), merchants=runtime.merchants(),
                           sessions=runtime.sessions(), enqueue=enqueue,
                           loop_limiter_for=_loop_limiter, loop_backlog=_loop_backlog)
    return _context


def _redis() -> redis.Redis:
    """The process's shared client (integration.infra.redis_pool) for the limiter, the locks and the
    backlog check: the same connection as the metrics and Celery's publishing."""
    return redis_pool.client(runtime.redis_url())


def _loop_limiter(merchant) -> TokenBucket:
    return TokenBucket(_redis(), bucket_name("loop", merchant.loop_api_key),
                       runtime.settings().loop_requests_per_minute)


def _loop_backlog() -> int | None:
    """Messages waiting on the `loop` queue (the Redis transport keeps a queue as a list)."""
    try:
        return _redis().llen("loop")
    except redis.RedisError:
        return None


def backoff(retries: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor."""
    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** retries) * random.uniform(0.5, 1.0)
    return min(RETRY_MAX_S, max(delay, retry_after or 0.0))


def _retry(task, exc: Exception):
    if task.request.retries >= task.max_retries:
        raise exc
    raise task.retry(exc=exc, countdown=backoff(task.request.retries, getattr(exc, "retry_after", None)))


@app.task(name="loop.handle_event", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def handle_event(self, event_id: int) -> None:
    try:
        pipeline.handle_event(context(), event_id)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            pipeline.fail_event(context(), event_id, f"gave up after retries: {exc}")
            return
        _retry(self, exc)


@app.task(name="inbox.dispatch_events", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def dispatch_events(self, event_ids: list[int]) -> None:
    """Fan a receiver's batch out into one handle_event per row, so each keeps its own retries
    (sent twice, a row is handled once: handle_event re-reads its status)."""
    try:
        for event_id in event_ids:
            enqueue("handle_event", event_id)
    except Exception as exc:  # broker trouble mid-way: send the whole batch again later
        _retry(self, exc)


def _step_task(step: str):
    def run(self, return_id: int) -> None:
        try:
            pipeline.run_step(context(), step, return_id)
        except TRANSIENT as exc:
            if self.request.retries >= self.max_retries:
                pipeline.park_return(context(), return_id, step,
                                     f"{step} still failing after {self.max_retries} retries: {exc}")
                return
            _retry(self, exc)

    run.__name__ = run.__qualname__ = step
    return app.task(name=STEP_TASK_NAMES[step], bind=True, acks_late=True,
                    max_retries=MAX_RETRIES)(run)


create_rma = _step_task("create_rma")
transmit_rma = _step_task("transmit_rma")
decide = _step_task("decide")
act_in_loop = _step_task("act_in_loop")
close_rma = _step_task("close_rma")
cancel_rma = _step_task("cancel_rma")


def _each_merchant(fn, what: str) -> None:
    for name in runtime.merchants():
        try:
            fn(context(), name)
        except Exception:  # one merchant's outage must not stop the others' polling
            log.exception("%s failed for merchant %s", what, name)


@app.task(name="rlm.poll_receipts", acks_late=True)
def poll_receipts() -> None:
    with _single("poll_receipts", timeout=15) as mine:
        if mine:
            _each_merchant(pipeline.poll_receipts, "receipt poll")


@app.task(name="loop.reconcile", acks_late=True)
def reconcile() -> None:
    with _single("reconcile", timeout=300) as mine:
        if mine:
            _each_merchant(maintenance.reconcile_loop, "Loop reconciliation")


@app.task(name="integration.sweep", acks_late=True)
def sweep() -> None:
    with _single("sweep", timeout=15) as mine:
        counts = maintenance.sweep(context()) if mine else {}
        if any(counts.values()):
            log.info("sweep re-drove %s", counts)


@app.task(name="integration.purge", acks_late=True)
def purge() -> None:
    """Retention: clear old webhook bodies, errors and timeline details (integration.store.retention)."""
    with _single("purge", timeout=300) as mine:
        if not mine:
            return
        counts = retention.purge_old_data(runtime.sessions(), context().now(),
                                          runtime.settings().retention_days)
    if any(counts.values()):
        log.info("retention cleared %s", counts)


def _single(name: str, timeout: float):
    """The periodic job's lock (integration.infra.locks.single_run) on this process's client."""
    return single_run(_redis(), name, timeout)
