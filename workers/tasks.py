"""Celery tasks, built from the step table (integration/workflow/steps.py): each takes an id,
re-reads state, and retries by its step's policy: back off on 5xx, timeouts, connection errors
and 429; never retry other 4xx (the step parks the return instead).
"""
from __future__ import annotations

import logging
import random
from dataclasses import replace

import redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from integration.errors import NoSlot, RetryableError
from integration.infra import redis_pool
from integration.infra.locks import single_run
from integration.store import retention
from integration.workflow import events, receiving, reconcile, runner, steps, sweeper
from integration.workflow.context import Context
from integration.workflow.steps import (
    DEFAULT_RETRY,
    DISPATCH_EVENTS,
    HANDLE_EVENT,
    PERIODIC,
    STEPS,
    RetryPolicy,
    Step,
)

from . import fanout, runtime
from .celery_app import app

log = logging.getLogger(__name__)

# Conflicts with another worker or a locked database: retry soon.
TRANSIENT = (RetryableError, StaleDataError, OperationalError, redis.ConnectionError)

PERIODIC_TASK = {p.name: p.task for p in PERIODIC}
PERIODIC_BY_NAME = {p.name: p for p in PERIODIC}

_context: Context | None = None


def context() -> Context:
    global _context
    merchants = runtime.merchants()
    if _context is None:
        _context = Context.for_service(runtime.settings(), merchants, runtime.sessions(),
                                       lambda task, args, **kw: app.send_task(task, args=args, **kw), _redis())
    elif _context.merchants is not merchants:  # the merchants table changed: no restart needed
        _context = replace(_context, merchants=merchants, _loop={}, _rlm={})
    return _context


def publish_events(event_ids: list[int]) -> None:
    """Hand stored inbox rows to the workers: one message for a row, one for a batch of them."""
    if len(event_ids) == 1:
        app.send_task(HANDLE_EVENT, args=[event_ids[0]])
    else:
        app.send_task(DISPATCH_EVENTS, args=[event_ids])


def _redis() -> redis.Redis:
    """The process's shared client (integration.infra.redis_pool) for the limiter, the locks and
    the backlog check: the same connection as the metrics and Celery's publishing."""
    return redis_pool.client(runtime.redis_url())


def backoff(retries: int, retry_after: float | None = None, policy: RetryPolicy = DEFAULT_RETRY) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor."""
    delay = min(policy.max_s, policy.base_s * 2 ** retries) * random.uniform(0.5, 1.0)
    return min(policy.max_s, max(delay, retry_after or 0.0))


def _retry(task, exc: Exception, policy: RetryPolicy, kind: str, target_id: int):
    """Retry later, keeping the row's lease past the retry so the sweeper does not send a
    duplicate meanwhile."""
    countdown = backoff(task.request.retries, getattr(exc, "retry_after", None), policy)
    runner.extend_lease(context(), kind, target_id, countdown)
    raise task.retry(exc=exc, countdown=countdown)


@app.task(name=HANDLE_EVENT, bind=True, acks_late=True, max_retries=DEFAULT_RETRY.max_retries)
def handle_event(self, event_id: int) -> None:
    try:
        events.handle_event(context(), event_id)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            events.fail_event(context(), event_id, f"gave up after retries: {exc}")
            return
        _retry(self, exc, DEFAULT_RETRY, "event", event_id)


@app.task(name=DISPATCH_EVENTS, bind=True, acks_late=True, max_retries=DEFAULT_RETRY.max_retries)
def dispatch_events(self, event_ids: list[int]) -> None:
    """Fan a receiver's batch out into one handle_event per row, so each keeps its own retries
    (sent twice, a row is handled once: handle_event re-reads its status)."""
    try:
        for event_id in event_ids:
            app.send_task(HANDLE_EVENT, args=[event_id])
    except Exception as exc:  # broker trouble mid-way: send the whole batch again later
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None


def _step_task(step: Step):
    def run(self, return_id: int) -> None:
        try:
            steps.run_step(context(), step.name, return_id)
        except TRANSIENT as exc:
            if self.request.retries >= self.max_retries:
                runner.park_return(context(), return_id, step.name,
                                   f"{step.name} still failing after {self.max_retries} retries: {exc}")
                return
            _retry(self, exc, step.retry, "return", return_id)

    run.__name__ = run.__qualname__ = step.name
    return app.task(name=step.task, bind=True, acks_late=True, max_retries=step.retry.max_retries)(run)


STEP_TASKS = {step.name: _step_task(step) for step in STEPS}


def _fan_out(periodic: str, job: str) -> int:
    """The beat's job: one task per merchant (workers/fanout.py), nothing else."""
    p = PERIODIC_BY_NAME[periodic]
    assert p.per_merchant is not None
    task = p.per_merchant
    interval = float(getattr(runtime.settings(), p.every))
    with fanout.publisher_for(app, task) as send:
        return fanout.fan_out(_redis(), job, runtime.merchants(), interval, send)


def _for_merchant(job: str, merchant: str, lock_s: float, fn, what: str) -> None:
    """One merchant's run, under its own lock (an overlapping run does nothing). Its merchant
    without a free slot (NoSlot): skipped, the next run picks up from the same cursor."""
    fanout.started(_redis(), job, merchant)
    if merchant not in runtime.merchants():
        return  # removed since the fan-out
    with _single(f"{job}:{merchant}", timeout=lock_s) as mine:
        if not mine:
            return
        try:
            fn(context(), merchant)
        except NoSlot as exc:
            log.info("%s skipped for merchant %s until its next run: %s", what, merchant, exc.message)
        except Exception:  # logged here: the next run tries again, nothing to retry now
            log.exception("%s failed for merchant %s", what, merchant)


@app.task(name=PERIODIC_TASK["poll-rlm-receipts"], acks_late=True)
def poll_receipts() -> None:
    _fan_out("poll-rlm-receipts", "poll_receipts")


@app.task(name=PERIODIC_BY_NAME["poll-rlm-receipts"].per_merchant, acks_late=True)
def poll_receipts_for(merchant: str) -> None:
    _for_merchant("poll_receipts", merchant, 15, receiving.poll_receipts, "receipt poll")


@app.task(name=PERIODIC_TASK["reconcile-loop"], acks_late=True)
def reconcile_loop() -> None:
    _fan_out("reconcile-loop", "reconcile")


@app.task(name=PERIODIC_BY_NAME["reconcile-loop"].per_merchant, acks_late=True)
def reconcile_for(merchant: str) -> None:
    _for_merchant("reconcile", merchant, 300, reconcile.reconcile_loop, "Loop reconciliation")


@app.task(name=PERIODIC_TASK["sweep"], acks_late=True)
def sweep() -> None:
    with _single("sweep", timeout=15) as mine:
        counts = sweeper.sweep(context()) if mine else {}
        if any(counts.values()):
            log.info("sweep re-drove %s", counts)


@app.task(name=PERIODIC_TASK["purge-old-data"], acks_late=True)
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
