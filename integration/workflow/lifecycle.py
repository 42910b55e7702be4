"""Our side of a return's life (workflow.md), and which step moves each state on."""
from __future__ import annotations

from datetime import datetime

from integration.store.models import Return, TimelineEntry, utcnow

RECEIVED = "received"  # the webhook (or the reconciliation pull) told us about the return
RMA_CREATED = "rma_created"
TRANSMITTED = "transmitted"
PARTIALLY_RECEIVED = "partially_received"
FULLY_RECEIVED = "fully_received"  # workflow.md's second `received`: every unit is in
DECIDED = "decided"
LOOP_ACTIONED = "loop_actioned"
RMA_CLOSED = "rma_closed"
COMPLETE = "complete"
CANCELLING = "cancelling"  # Loop cancelled it; the RMA still has to be cancelled in RLM
CANCELLED = "cancelled"
NEEDS_ATTENTION = "needs_attention"

TERMINAL = {COMPLETE, CANCELLED}
WAITING_FOR_GOODS = {TRANSMITTED, PARTIALLY_RECEIVED, FULLY_RECEIVED}
HAS_RMA = {RMA_CREATED, TRANSMITTED, PARTIALLY_RECEIVED, FULLY_RECEIVED, DECIDED, LOOP_ACTIONED}

# The task that moves a return on from each state (None: it waits for something outside).
NEXT_STEP = {
    RECEIVED: "create_rma",
    RMA_CREATED: "transmit_rma",
    TRANSMITTED: "decide",
    PARTIALLY_RECEIVED: "decide",
    FULLY_RECEIVED: "decide",
    DECIDED: "act_in_loop",
    LOOP_ACTIONED: "close_rma",
    RMA_CLOSED: "close_rma",
    CANCELLING: "cancel_rma",
}

# Where an operator's retry puts a parked return back, by the step that failed.
RESUME_STATE = {
    "create_rma": RECEIVED,
    "transmit_rma": RMA_CREATED,
    "decide": TRANSMITTED,
    "act_in_loop": DECIDED,
    "close_rma": LOOP_ACTIONED,
    "cancel_rma": CANCELLING,
}

ALLOWED = {
    RECEIVED: {RMA_CREATED, TRANSMITTED, CANCELLING, CANCELLED, LOOP_ACTIONED, NEEDS_ATTENTION},
    RMA_CREATED: {TRANSMITTED, CANCELLING, LOOP_ACTIONED, NEEDS_ATTENTION},
    TRANSMITTED: {PARTIALLY_RECEIVED, FULLY_RECEIVED, DECIDED, CANCELLING, LOOP_ACTIONED,
                  NEEDS_ATTENTION},
    PARTIALLY_RECEIVED: {FULLY_RECEIVED, DECIDED, LOOP_ACTIONED, NEEDS_ATTENTION},
    FULLY_RECEIVED: {DECIDED, LOOP_ACTIONED, NEEDS_ATTENTION},
    DECIDED: {LOOP_ACTIONED, NEEDS_ATTENTION},
    LOOP_ACTIONED: {RMA_CLOSED, NEEDS_ATTENTION},
    RMA_CLOSED: {COMPLETE},
    CANCELLING: {CANCELLED, NEEDS_ATTENTION},
    NEEDS_ATTENTION: set(NEXT_STEP) | {COMPLETE, CANCELLED},  # `retry` resumes where it stopped
    COMPLETE: set(),
    CANCELLED: set(),
}


class IllegalTransition(Exception):
    pass


def transition(ret: Return, to_state: str, cause: str, detail: str | None = None) -> None:
    """Move `ret` to `to_state`, recording when and why on its timeline."""
    if to_state != ret.state and to_state not in ALLOWED.get(ret.state, set()):
        raise IllegalTransition(f"{ret.state} -> {to_state}")
    ret.timeline.append(TimelineEntry(from_state=ret.state, to_state=to_state, cause=cause,
                                      detail=detail, at=utcnow()))
    if to_state != ret.state:
        ret.step_attempts = 0
        clear_wait(ret)  # a schedule belongs to the state it was set in
    if to_state != RECEIVED:
        # The shopper's address serves only to create the RA, from `received`; whatever comes
        # next (the RA, a cancellation, a park, the end), it goes. A return parked before its
        # RA reads it from Loop again when retried (pipeline.create_rma).
        ret.ship_from = None
    ret.state = to_state
    ret.updated_at = utcnow()


# What a return can wait for on an explicit schedule (Return.waiting_for).
LOOP_OUTCOME = "loop_outcome"  # Loop to show the outcome of our process / remove call


def wait_for(ret: Return, what: str, next_check_at: datetime, deadline: datetime) -> None:
    """Look again at `next_check_at` (the sweeper enqueues the state's step then); past
    `deadline` the step parks the return instead of waiting longer."""
    ret.waiting_for, ret.next_check_at, ret.wait_deadline = what, next_check_at, deadline


def clear_wait(ret: Return) -> None:
    ret.waiting_for = ret.next_check_at = ret.wait_deadline = None


def note(ret: Return, cause: str, detail: str | None = None) -> None:
    """Record something that happened without a state change."""
    ret.timeline.append(TimelineEntry(from_state=ret.state, to_state=ret.state, cause=cause,
                                      detail=detail, at=utcnow()))
    ret.updated_at = utcnow()


def park(ret: Return, step: str | None, reason: str) -> None:
    """needs_attention, with the reason and the step to resume on retry."""
    ret.attention_reason = reason
    ret.attention_step = step
    transition(ret, NEEDS_ATTENTION, f"{step or 'event'} failed", reason)
