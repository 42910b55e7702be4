"""How every step runs, and the one way the next one is scheduled.

A step takes a return id and re-reads state; no database transaction is held open across an
HTTP call: the step reads a snapshot, talks to Loop or RLM, then re-reads the row under a lock
and writes only if the return is still in a state the step runs from (`@step(requires=...)`).
The next step is published only after the commit (`schedule`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, overload

from sqlalchemy.orm import Session

from integration.store.db import after_commit, read_scope, session_scope
from integration.store.models import Return, WebhookEvent
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context

log = logging.getLogger(__name__)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Superseded(Exception):
    """The return moved on while this step ran; nothing more to do here."""


ANY_STATE: frozenset[str] = frozenset(lc.State)


@dataclass
class StepRun:
    """What a step's body works with: the context, a snapshot read before any HTTP call, and
    `locked()` to write."""

    ctx: Context
    return_id: int
    snap: Return
    requires: frozenset[str]

    @contextmanager
    def locked(self, states: Collection[str] | None = None) -> Iterator[tuple[Session, Return]]:
        """The row under lock, if it is still in `states` (by default the step's own);
        otherwise the step stops here (Superseded), having written nothing."""
        with locked(self.ctx, self.return_id) as (s, ret):
            if ret is None or ret.state not in (self.requires if states is None else states):
                raise Superseded()
            yield s, ret


class StepFn(Protocol):
    requires: frozenset[str]
    # How many Loop requests the step makes for a return (None: it makes none).
    loop_calls: Callable[[Context, Return], int] | None
    __name__: str

    def __call__(self, ctx: Context, return_id: int) -> None: ...


def step(*, requires: Collection[str],
         loop_calls: Callable[[Context, Return], int] | None = None) -> Callable[[Callable[[StepRun], None]], StepFn]:
    """A workflow step that runs only while its return is in one of `requires`: a message for a
    return that has moved on (a duplicate, a late retry) is a no-op.

    `loop_calls`: how many Loop requests the step makes for this return; their tokens are taken
    at once before it starts (Context.loop_calls), or the step is rescheduled (NoSlot) before
    anything is read or sent."""
    states = frozenset(requires)

    def wrap(body: Callable[[StepRun], None]) -> StepFn:
        def run(ctx: Context, return_id: int) -> None:
            with read_scope(ctx.sessions) as s:
                snap = s.get(Return, return_id)
            if snap is None or snap.state not in states:
                return
            try:
                if loop_calls is None:
                    body(StepRun(ctx, return_id, snap, states))
                else:
                    with ctx.loop_calls(snap.merchant, loop_calls(ctx, snap)):
                        body(StepRun(ctx, return_id, snap, states))
            except Superseded:
                return

        run.__name__ = run.__qualname__ = body.__name__
        run.__doc__ = body.__doc__
        run.requires = states  # type: ignore[attr-defined]
        run.loop_calls = loop_calls  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return wrap


@contextmanager
def locked(ctx: Context, return_id: int) -> Iterator[tuple[Session, Return | None]]:
    with session_scope(ctx.sessions) as s:
        yield s, s.get(Return, return_id, with_for_update=True)


def enqueue_after_commit(ctx: Context, s: Session, step_name: str, target_id: int) -> None:
    """The one way a step is published: after the transaction that made it due commits (a
    worker must never see the message before the row)."""
    after_commit(s, lambda: ctx.enqueue(step_name, target_id))


def send_step(ctx: Context, s: Session, ret: Return, step_name: str) -> None:
    """Publish the state's step for `ret` and give the row a lease: should the message be lost,
    the sweeper sends it again once STUCK_AFTER_S has passed."""
    lc.set_wait(ret, lc.Wait.STEP, ctx.now() + timedelta(seconds=ctx.settings.stuck_after_s))
    enqueue_after_commit(ctx, s, step_name, ret.id)


def send_step_in(ctx: Context, s: Session, ret: Return, step_name: str, seconds: float) -> None:
    """Publish the step for delivery `seconds` from now, the lease running from then."""
    if ctx.enqueue_in is None:  # no delayed delivery here: sent now, it looks again at once
        send_step(ctx, s, ret, step_name)
        return
    lc.set_wait(ret, lc.Wait.STEP, ctx.now() + timedelta(seconds=seconds + ctx.settings.stuck_after_s))
    enqueue_in, return_id = ctx.enqueue_in, ret.id
    after_commit(s, lambda: enqueue_in(step_name, return_id, seconds))


def slot_horizon_s(ctx: Context) -> float:
    """How far ahead a step waiting for a slot is published with a delay, rather than left to
    the sweeper: a little over one sweep, so no sweep's gap delays it (and no broker holds
    delayed messages for long)."""
    return 1.5 * ctx.settings.sweep_interval_s


def defer_step(ctx: Context, return_id: int, step_name: str, requires: Collection[str],
               wait_s: float) -> None:
    """Its merchant has no Loop token or RLM call slot for the step now (NoSlot): come back
    when one is due, holding no worker slot meanwhile. Soon: the step is published with that
    delay. Later: the return waits for it (Wait.SLOT) and the sweeper publishes it near then.
    Not an attempt: a merchant's backlog parks nothing."""
    with locked(ctx, return_id) as (s, ret):
        if ret is None or ret.state not in requires:
            return
        _wait_for_slot(ctx, s, ret, step_name, wait_s)


def _wait_for_slot(ctx: Context, s: Session, ret: Return, step_name: str, wait_s: float) -> None:
    if wait_s <= slot_horizon_s(ctx):
        send_step_in(ctx, s, ret, step_name, wait_s)
    else:
        deadline = ret.wait_deadline
        lc.set_wait(ret, lc.Wait.SLOT, ctx.now() + timedelta(seconds=wait_s))
        ret.wait_deadline = deadline  # a Loop outcome's window runs on regardless


def schedule(ctx: Context, s: Session, ret: Return) -> None:
    """After a step moved `ret`: what it waits for now. A state whose step runs on entry gets
    it sent, at its merchant's next Loop turn if it calls Loop (so a merchant's burst enters
    the shared `loop` queue only as fast as its limit drains it, never ahead of the others');
    waiting for goods gets the time decide can decide without more receipts."""
    from integration.workflow.steps import BY_NAME, step_on_entry  # the table imports the steps

    if ret.state in lc.WAITING_FOR_GOODS:
        lc.set_wait(ret, lc.Wait.GOODS, goods_due(ctx, ret))
        return
    name = step_on_entry(ret.state)
    if name is None:
        return
    calls = BY_NAME[name].run.loop_calls
    wait_s = ctx.loop_turn(ret.merchant, calls(ctx, ret)) if calls is not None else 0.0
    if wait_s > 0:
        _wait_for_slot(ctx, s, ret, name, wait_s)
    else:
        send_step(ctx, s, ret, name)


def goods_due(ctx: Context, ret: Return) -> datetime:
    """When decide can decide whatever else arrives: at once when every unit is in; otherwise at
    the end of the partial grace after the first receipt, or at the RA's expiry."""
    if ret.state == lc.FULLY_RECEIVED:
        return ctx.now()
    grace = ctx.merchant(ret.merchant).criteria.partial_grace_s
    first = as_utc(ret.first_receipt_at)
    times = [t for t in (as_utc(ret.expires_at),
                         first + timedelta(seconds=grace) if first is not None else None) if t is not None]
    return min(times, default=None) or ctx.now() + timedelta(days=1)  # no expiry known: look daily


def extend_lease(ctx: Context, kind: str, target_id: int, seconds: float) -> None:
    """A task retrying in `seconds`: keep its row from coming due before the retry has had
    its lease. Best effort: if the database is what fails, the sweeper merely sends it sooner."""
    until = ctx.now() + timedelta(seconds=seconds + ctx.settings.stuck_after_s)
    try:
        with session_scope(ctx.sessions) as s:
            row = (s.get(Return, target_id, with_for_update=True) if kind == "return"
                   else s.get(WebhookEvent, target_id, with_for_update=True))
            due = None if row is None else as_utc(row.next_attempt_at)
            leased = not isinstance(row, Return) or row.waiting_for == lc.Wait.STEP
            if row is not None and due is not None and due < until and leased:
                row.next_attempt_at = until
    except Exception:
        log.warning("could not extend the lease", extra={"kind": kind, "target_id": target_id})


def park_return(ctx: Context, return_id: int, step_name: str, reason: str) -> None:
    """needs_attention with a reason an operator can act on; nothing is dropped."""
    with locked(ctx, return_id) as (_, ret):
        if ret is None or ret.state in lc.TERMINAL or ret.state == lc.NEEDS_ATTENTION:
            return
        lc.park(ret, step_name, reason[:2000])
    log.warning("return parked", extra={"return_id": return_id, "step": step_name})
