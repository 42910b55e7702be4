"""Our side of a return's life (docs/workflow.md): its states, the moves allowed between them,
and what the return waits for in each (its explicit schedule).

Which step runs in which state, and when, is the step table's business (workflow/steps.py).
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from integration.store.models import Return, TimelineEntry, utcnow
from integration.workflow import rules


class State(StrEnum):
    RECEIVED = "received"  # the webhook (or the reconciliation pull) told us about the return
    RMA_CREATED = "rma_created"
    TRANSMITTED = "transmitted"
    PARTIALLY_RECEIVED = "partially_received"
    FULLY_RECEIVED = "fully_received"  # docs/workflow.md's second `received`: every unit is in
    DECIDED = "decided"
    # Shadow mode: the decision is recorded, not sent to Loop; a person acts in Loop (shadow.py).
    SHADOW_DECIDED = "shadow_decided"
    LOOP_ACTIONED = "loop_actioned"
    RMA_CLOSED = "rma_closed"
    COMPLETE = "complete"
    CANCELLING = "cancelling"  # Loop cancelled it; the RMA still has to be cancelled in RLM
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"


# Short names: the states read as words in the steps.
RECEIVED, RMA_CREATED, TRANSMITTED = State.RECEIVED, State.RMA_CREATED, State.TRANSMITTED
PARTIALLY_RECEIVED, FULLY_RECEIVED = State.PARTIALLY_RECEIVED, State.FULLY_RECEIVED
DECIDED, LOOP_ACTIONED, RMA_CLOSED = State.DECIDED, State.LOOP_ACTIONED, State.RMA_CLOSED
SHADOW_DECIDED = State.SHADOW_DECIDED
COMPLETE, CANCELLING, CANCELLED = State.COMPLETE, State.CANCELLING, State.CANCELLED
NEEDS_ATTENTION = State.NEEDS_ATTENTION

TERMINAL = frozenset({COMPLETE, CANCELLED})
WAITING_FOR_GOODS = frozenset({TRANSMITTED, PARTIALLY_RECEIVED, FULLY_RECEIVED})
# No step moves these on: a person does (an operator's retry; in Loop, for shadow mode).
WAITING_FOR_A_PERSON = frozenset({NEEDS_ATTENTION, SHADOW_DECIDED})
OPEN_STATES = frozenset(State) - TERMINAL


class LoopState(StrEnum):
    """A return's state in Loop, as we store it (lower case; Loop's "Needs Review" is `review`)."""

    OPEN = "open"
    CLOSED = "closed"
    EXPIRED = "expired"
    REVIEW = "review"
    CANCELLED = "cancelled"

    @staticmethod
    def of(raw: str | None) -> str:
        """Loop's spelling normalised; an unknown state is kept as it came (lower case)."""
        state = (raw or "").strip().lower()
        return LoopState.REVIEW if state == "needs review" else state


class Wait(StrEnum):
    """What a non-terminal return waits for (Return.waiting_for); `next_attempt_at` says when
    the sweeper looks again. Nothing is inferred from updated_at."""

    STEP = "step"  # its state's step was sent: due when that step should long have finished
    GOODS = "goods"  # the warehouse: due when decide can decide without more receipts
    LOOP_OUTCOME = "loop_outcome"  # Loop to show our process call's outcome: due at the next read
    SLOT = "slot"  # its merchant's Loop token or RLM call slot: due when one should be free
    PERSON = "person"  # needs_attention: never due; an operator retries
    PERSON_IN_LOOP = "person_in_loop"  # shadow_decided: never due; Loop's news moves it on


ALLOWED: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({RMA_CREATED, TRANSMITTED, CANCELLING, CANCELLED, LOOP_ACTIONED, NEEDS_ATTENTION}),
    RMA_CREATED: frozenset({TRANSMITTED, CANCELLING, LOOP_ACTIONED, NEEDS_ATTENTION}),
    TRANSMITTED: frozenset({PARTIALLY_RECEIVED, FULLY_RECEIVED, DECIDED, CANCELLING, LOOP_ACTIONED,
                            NEEDS_ATTENTION}),
    PARTIALLY_RECEIVED: frozenset({FULLY_RECEIVED, DECIDED, LOOP_ACTIONED, NEEDS_ATTENTION}),
    FULLY_RECEIVED: frozenset({DECIDED, LOOP_ACTIONED, NEEDS_ATTENTION}),
    DECIDED: frozenset({LOOP_ACTIONED, SHADOW_DECIDED, NEEDS_ATTENTION}),
    SHADOW_DECIDED: frozenset({LOOP_ACTIONED, NEEDS_ATTENTION}),
    LOOP_ACTIONED: frozenset({RMA_CLOSED, NEEDS_ATTENTION}),
    RMA_CLOSED: frozenset({COMPLETE}),
    CANCELLING: frozenset({CANCELLED, NEEDS_ATTENTION}),
    # An operator's retry resumes where the return stopped; Loop can still end it meanwhile.
    NEEDS_ATTENTION: OPEN_STATES - {NEEDS_ATTENTION} | TERMINAL,
    COMPLETE: frozenset(),
    CANCELLED: frozenset(),
}


# Our Loop actions by how they land: Loop only queues a process call, and its outcome shows later
# as the return closing; the others are done when Loop answers.
ASYNC_ACTIONS = frozenset({rules.PROCESS, rules.REMOVE_AND_PROCESS})
LANDED_STATE = {rules.PROCESS: LoopState.CLOSED, rules.REMOVE_AND_PROCESS: LoopState.CLOSED,
                rules.CLOSE: LoopState.CLOSED, rules.FLAG: LoopState.REVIEW}


class IllegalTransition(Exception):
    pass


def transition(ret: Return, to_state: str, cause: str, detail: str | None = None) -> None:
    """Move `ret` to `to_state`, recording when and why on its timeline.

    A new state starts with a schedule that is due at once: should no step set a better one
    (workflow/runner.schedule), the next sweep sends the state's step rather than the return
    waiting for nothing.
    """
    if to_state != ret.state and to_state not in ALLOWED.get(ret.state, frozenset()):
        raise IllegalTransition(f"{ret.state} -> {to_state}")
    now = utcnow()
    ret.timeline.append(TimelineEntry(from_state=ret.state, to_state=to_state, cause=cause,
                                      detail=detail, at=now))
    if to_state != ret.state:
        ret.step_attempts = 0
        clear_wait(ret)  # a schedule belongs to the state it was set in
        if to_state in TERMINAL:
            pass
        elif to_state == NEEDS_ATTENTION:
            set_wait(ret, Wait.PERSON, None)
        elif to_state == SHADOW_DECIDED:
            set_wait(ret, Wait.PERSON_IN_LOOP, None)
        else:
            set_wait(ret, Wait.STEP, now)
    if to_state != RECEIVED:
        # The shopper's address serves only to create the RA, from `received`; whatever comes
        # next (the RA, a cancellation, a park, the end), it goes. A return parked before its
        # RA reads it from Loop again when retried (workflow/rma.create_rma).
        ret.ship_from = None
    ret.state = to_state
    ret.updated_at = now


def set_wait(ret: Return, what: Wait, next_attempt_at: datetime | None,
             deadline: datetime | None = None) -> None:
    """Wait for `what`; the sweeper sends the state's step at `next_attempt_at`. Past `deadline`
    (LOOP_OUTCOME only) the step parks the return instead of waiting longer."""
    if what != Wait.STEP:
        ret.step_attempts = 0  # the step ran to its end: a new wait starts a new count
    ret.waiting_for, ret.next_attempt_at = what, next_attempt_at
    if what != Wait.STEP:  # a step sent while waiting for Loop keeps the wait's deadline
        ret.wait_deadline = deadline


def clear_wait(ret: Return) -> None:
    ret.waiting_for = ret.next_attempt_at = ret.wait_deadline = None


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


# --- what Loop's news does to a return (the triggers we do not cause) ------------------------
def our_call_finished_after_all(ret: Return, loop_state: str) -> bool:
    """Parked at the Loop step after a process call was sent (its outcome unknown, or a
    processing failure reported, perhaps for an earlier attempt), and now Loop shows it done."""
    return (ret.state == NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
            and ret.decision in ASYNC_ACTIONS and ret.loop_actioned_at is not None
            and loop_state == LANDED_STATE[ret.decision])


def on_loop_state(ret: Return, loop_state: str) -> None:
    """What a Loop state we did not cause means for our side (docs/workflow.md, side paths)."""
    if ret.state == SHADOW_DECIDED or (ret.state == DECIDED and ret.shadow_decided_at is not None):
        from integration.workflow.shadow import on_person_action  # it builds on this module

        on_person_action(ret, loop_state)
        return
    ours = ret.loop_action_claimed_at is not None
    if our_call_finished_after_all(ret, loop_state):
        ret.attention_reason = ret.attention_step = None
        transition(ret, LOOP_ACTIONED, f"Loop shows the return {loop_state}",
                   f"our {ret.decision} call was done after all; the RMA will be closed")
        return
    if loop_state in (LoopState.CANCELLED, LoopState.EXPIRED):
        if ret.state in (RECEIVED, RMA_CREATED, TRANSMITTED):
            transition(ret, CANCELLING, f"Loop return {loop_state}", "cancel the RMA in RLM")
        elif ret.state in (PARTIALLY_RECEIVED, FULLY_RECEIVED, DECIDED):
            park(ret, None, f"Loop return {loop_state} after goods were received in RLM "
                            f"(RA {ret.rma_number}); review by hand")
    elif loop_state in (LoopState.CLOSED, LoopState.REVIEW) and not ours:
        if ret.state in (RECEIVED, RMA_CREATED, DECIDED) or ret.state in WAITING_FOR_GOODS:
            ret.decision = "by_person"
            verb = "processed or closed" if loop_state == LoopState.CLOSED else "flagged"
            transition(ret, LOOP_ACTIONED, f"{verb} by a person in Loop",
                       "no action of ours; the RMA will be closed")


def on_processing_failed(ret: Return, reason: str) -> None:
    """Loop reports it could not process the return (`return.processing.failed`)."""
    from integration.workflow.steps import step_for_state  # the table imports the steps

    if ret.state == SHADOW_DECIDED or (ret.shadow_decided_at is not None and ret.state not in TERMINAL):
        # Shadow mode: we sent nothing, so it is a person's processing that failed; they see it
        # in Loop. Parking at the Loop step would let a retry send a call we must never send.
        note(ret, "return.processing.failed", f"{reason}; shadow mode: a person's processing, "
                                               "nothing of ours to retry")
    elif ret.state in TERMINAL or ret.state in (NEEDS_ATTENTION, RMA_CLOSED):
        # Too late to hold anything back (the RMA is closed): record it and make it visible.
        ret.attention_reason = reason
        note(ret, "return.processing.failed", reason)
    else:
        # A retry processes again (our own call failed) or resumes the step that was next.
        park(ret, "act_in_loop" if ret.state == LOOP_ACTIONED else step_for_state(ret.state), reason)
