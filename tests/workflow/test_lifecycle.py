"""The state machine walked whole: every allowed and every refused transition, the schedule each
new state starts with, and what Loop's news does to a return in each state."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integration.store.models import Return
from integration.workflow import lifecycle as lc
from integration.workflow.lifecycle import LoopState, State, Wait
from integration.workflow.steps import STEPS, step_for_state, step_on_entry

ALL_MOVES = [(a, b) for a in State for b in State if a != b]


def a_return(state: State, **fields) -> Return:
    ret = Return(merchant="demo", loop_return_id="1", state=state, step_attempts=3, timeline=[],
                 ship_from={"city": "X"}, **fields)
    lc.set_wait(ret, Wait.LOOP_OUTCOME, datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    return ret


@pytest.mark.parametrize(("start", "to"), ALL_MOVES, ids=[f"{a}->{b}" for a, b in ALL_MOVES])
def test_every_move_is_allowed_or_refused_as_the_table_says(start, to):
    ret = a_return(start)
    if to in lc.ALLOWED[start]:
        lc.transition(ret, to, "test")
        assert ret.state == to
        assert (ret.timeline[-1].from_state, ret.timeline[-1].to_state) == (start, to)
        assert ret.step_attempts == 0 and ret.wait_deadline is None  # a new state, a new schedule
        if to in lc.TERMINAL:
            assert (ret.waiting_for, ret.next_attempt_at) == (None, None)
        elif to == State.NEEDS_ATTENTION:
            assert (ret.waiting_for, ret.next_attempt_at) == (Wait.PERSON, None)
        elif to == State.SHADOW_DECIDED:  # shadow mode: Loop's news moves it on, never a sweep
            assert (ret.waiting_for, ret.next_attempt_at) == (Wait.PERSON_IN_LOOP, None)
        else:  # due at once, unless a step sets a better schedule: never waiting for nothing
            assert ret.waiting_for == Wait.STEP and ret.next_attempt_at is not None
        assert ret.ship_from is None or to == State.RECEIVED
    else:
        with pytest.raises(lc.IllegalTransition):
            lc.transition(ret, to, "test")
        assert ret.state == start and ret.timeline == []


def test_terminal_states_have_no_way_out_and_every_other_state_a_step_or_a_person():
    assert all(not lc.ALLOWED[s] for s in lc.TERMINAL)
    for state in lc.OPEN_STATES - lc.WAITING_FOR_A_PERSON:
        assert step_for_state(state) is not None, state
    assert all(step_for_state(state) is None for state in lc.WAITING_FOR_A_PERSON)


def test_each_state_is_moved_on_by_one_step_only():
    owners = [state for step in STEPS for state in step.requires]
    assert len(owners) == len(set(owners))


def test_only_waiting_for_goods_has_no_step_on_entry():
    assert {s for s in lc.OPEN_STATES if step_on_entry(s) is None} == lc.WAITING_FOR_GOODS | lc.WAITING_FOR_A_PERSON


def test_a_retry_resumes_in_a_state_the_step_runs_from_and_the_lifecycle_allows():
    for step in STEPS:
        assert step.resume_from in step.requires
        assert step.resume_from in lc.ALLOWED[State.NEEDS_ATTENTION]


# What a Loop state we did not cause does to a return in each of our states.
LOOP_NEWS = {
    # (our state, Loop state): our state after
    (State.RECEIVED, LoopState.CANCELLED): State.CANCELLING,
    (State.RMA_CREATED, LoopState.EXPIRED): State.CANCELLING,
    (State.TRANSMITTED, LoopState.CANCELLED): State.CANCELLING,
    (State.PARTIALLY_RECEIVED, LoopState.CANCELLED): State.NEEDS_ATTENTION,
    (State.FULLY_RECEIVED, LoopState.EXPIRED): State.NEEDS_ATTENTION,
    (State.DECIDED, LoopState.CANCELLED): State.NEEDS_ATTENTION,
    (State.RECEIVED, LoopState.CLOSED): State.LOOP_ACTIONED,
    (State.TRANSMITTED, LoopState.REVIEW): State.LOOP_ACTIONED,
    (State.DECIDED, LoopState.CLOSED): State.LOOP_ACTIONED,
    (State.LOOP_ACTIONED, LoopState.CANCELLED): State.LOOP_ACTIONED,
    (State.COMPLETE, LoopState.CANCELLED): State.COMPLETE,
    (State.CANCELLING, LoopState.CLOSED): State.CANCELLING,
    (State.NEEDS_ATTENTION, LoopState.CLOSED): State.NEEDS_ATTENTION,
    (State.TRANSMITTED, LoopState.OPEN): State.TRANSMITTED,
    # Shadow mode: a person's action in Loop, compared with ours (tests/workflow/test_shadow.py).
    (State.SHADOW_DECIDED, LoopState.CLOSED): State.LOOP_ACTIONED,
    (State.SHADOW_DECIDED, LoopState.REVIEW): State.LOOP_ACTIONED,
    (State.SHADOW_DECIDED, LoopState.CANCELLED): State.NEEDS_ATTENTION,
    (State.SHADOW_DECIDED, LoopState.OPEN): State.SHADOW_DECIDED,
}


@pytest.mark.parametrize(("state", "loop_state"), list(LOOP_NEWS), ids=[f"{a}+{b}" for a, b in LOOP_NEWS])
def test_loop_news_moves_a_return_as_docs_workflow_says(state, loop_state):
    ret = a_return(state)
    lc.on_loop_state(ret, loop_state)
    assert ret.state == LOOP_NEWS[(state, loop_state)]
    if ret.state == State.LOOP_ACTIONED and state not in (State.LOOP_ACTIONED, State.SHADOW_DECIDED):
        assert ret.decision == "by_person"


def test_a_person_acting_after_our_claim_is_not_taken_for_a_person():
    ret = a_return(State.DECIDED, loop_action_claimed_at=datetime(2030, 1, 1, tzinfo=UTC))
    lc.on_loop_state(ret, LoopState.CLOSED)
    assert ret.state == State.DECIDED  # our own call landing: act_in_loop records it


def test_a_parked_process_call_that_landed_after_all_heals_itself():
    ret = a_return(State.NEEDS_ATTENTION, decision="process", attention_step="act_in_loop",
                   attention_reason="outcome unknown", loop_actioned_at=datetime(2030, 1, 1, tzinfo=UTC))
    lc.on_loop_state(ret, LoopState.CLOSED)
    assert ret.state == State.LOOP_ACTIONED and ret.attention_reason is None


@pytest.mark.parametrize("state", list(State))
def test_a_processing_failure_parks_at_the_step_a_retry_should_run(state):
    ret = a_return(state)
    lc.on_processing_failed(ret, "Loop could not process the return: card declined")
    if state == State.SHADOW_DECIDED:  # a person's processing: nothing of ours to retry
        assert ret.state == state and ret.attention_step is None
    elif state in lc.TERMINAL or state in (State.NEEDS_ATTENTION, State.RMA_CLOSED):
        # Found by this walk: in rma_closed the old code raised IllegalTransition.
        assert ret.state == state and ret.attention_reason.endswith("card declined")
    else:
        assert ret.state == State.NEEDS_ATTENTION
        expected = "act_in_loop" if state == State.LOOP_ACTIONED else step_for_state(state)
        assert ret.attention_step == expected


def test_loop_states_are_normalised_once():
    assert LoopState.of(" Needs Review ") == LoopState.REVIEW
    assert LoopState.of("CLOSED") == LoopState.CLOSED
    assert LoopState.of(None) == ""
