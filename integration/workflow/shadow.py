"""Shadow mode (a merchant's `mode = "shadow"`): the whole workflow runs (the RMA, the receipts,
the decision) but nothing is sent to Loop. The decision is recorded as what we would have done,
the return waits for a person to act in Loop, and their action is compared with ours.

A return's mode is fixed when it is decided (`shadow_decided_at`, never cleared): one decided
in shadow is never acted on in Loop by us, even after its merchant is switched to live; one
decided live but not yet sent when its merchant is switched to shadow is not sent either.
Once a person has acted in Loop the RMA is closed `MANUAL`, as when a person acts first in live.
"""
from __future__ import annotations

from datetime import datetime

from integration.merchants import SHADOW, Merchant
from integration.store.models import Return, utcnow
from integration.workflow import lifecycle as lc
from integration.workflow import rules
from integration.workflow.runner import StepRun, schedule

WOULD = {
    rules.PROCESS: "would process",
    rules.REMOVE_AND_PROCESS: "would remove the missing items and process the rest",
    rules.FLAG: "would flag",
    rules.CLOSE: "would close (expired)",
}

# What a person did, by the Loop state they left the return in.
PERSON_ACTIONS = {
    lc.LoopState.CLOSED: "processed or closed",
    lc.LoopState.REVIEW: "flagged",
    lc.LoopState.CANCELLED: "cancelled",
    lc.LoopState.EXPIRED: "expired",
}


def would(decision: str | None) -> str:
    return WOULD.get(decision or "", f"would {decision}")


def decides_in_shadow(merchant: Merchant, ret: Return) -> bool:
    """At the decision: its merchant is in shadow mode, or it was decided in shadow before (a
    re-decided shadow return stays one)."""
    return merchant.mode == SHADOW or ret.shadow_decided_at is not None


def must_not_send(merchant: Merchant, ret: Return) -> bool:
    """At the Loop step: decided in shadow, or its merchant is in shadow mode now and nothing
    has been claimed (a call already on its way is followed to its outcome, as in live)."""
    return ret.shadow_decided_at is not None or (merchant.mode == SHADOW
                                                 and ret.loop_action_claimed_at is None)


def agrees(decision: str | None, person_loop_state: str) -> bool:
    """Whether the person left the return where our action would have: processed (or closed)
    → closed, flagged → review. Loop's state cannot tell remove-and-process from process."""
    return lc.LANDED_STATE.get(decision or "") == person_loop_state


def hold(ret: Return, now: datetime) -> None:
    """Record a decided return's decision as what we would do in Loop, and wait for a person."""
    if ret.shadow_decided_at is None:
        ret.shadow_decided_at = now
    summary = (ret.decision_detail or {}).get("summary") or ""
    sent = f"note: {ret.loop_note}" if ret.decision == rules.FLAG and ret.loop_note else summary
    lc.transition(ret, lc.SHADOW_DECIDED, f"shadow mode: {would(ret.decision)}",
                  f"not sent to Loop; {sent}; waiting for a person to act in Loop")
    if ret.loop_state in PERSON_ACTIONS:  # a person was first (seen while it was still decided)
        on_person_action(ret, ret.loop_state)


def on_person_action(ret: Return, loop_state: str) -> None:
    """Loop shows a shadow-decided return no longer open: a person acted. Record what they did
    (the first action only) and whether it agrees with ours; then close the RMA as in live."""
    action = PERSON_ACTIONS.get(lc.LoopState(loop_state)) if loop_state in PERSON_ACTIONS else None
    if action is None:
        return  # still open: still waiting for a person
    if ret.person_action is None:
        ret.person_action, ret.person_acted_at = loop_state, utcnow()
    verdict = "agreed" if agrees(ret.decision, loop_state) else "disagreed"
    detail = f"shadow mode: {verdict} (we {would(ret.decision)})"
    if loop_state in (lc.LoopState.CLOSED, lc.LoopState.REVIEW):
        lc.transition(ret, lc.LOOP_ACTIONED, f"{action} by a person in Loop",
                      f"{detail}; the RMA will be closed")
    else:  # as in live once goods were received: a person reviews it
        lc.park(ret, None, f"Loop return {loop_state} after it was decided (RA {ret.rma_number}); "
                           f"review by hand; {detail}")


def hold_decided(run: StepRun) -> None:
    """The Loop step's shadow branch: hold the decided return instead of sending anything."""
    with run.locked() as (s, ret):
        if not must_not_send(run.ctx.merchant(ret.merchant), ret):
            return  # another worker claimed it meanwhile (live): it follows the call
        hold(ret, run.ctx.now())
        schedule(run.ctx, s, ret)
