"""The task layer's retry policy, run through Celery itself (eagerly): backoff bounds, the lease
kept past each retry, and parking once the retries are spent."""
from __future__ import annotations

from datetime import timedelta

import pytest

from integration.errors import RetryableError
from integration.settings import load_settings
from integration.store.models import Return, utcnow
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.steps import DEFAULT_RETRY, RetryPolicy

tasks = pytest.importorskip("workers.tasks")


@pytest.mark.parametrize("retries", range(0, 14))
def test_backoff_grows_with_jitter_and_never_passes_the_cap(retries):
    policy = RetryPolicy(max_retries=10, base_s=2.0, max_s=600.0)
    for _ in range(50):
        delay = tasks.backoff(retries, policy=policy)
        ceiling = min(600.0, 2.0 * 2 ** retries)
        assert ceiling * 0.5 <= delay <= ceiling


def test_a_servers_retry_after_is_a_floor_but_the_cap_still_holds():
    assert tasks.backoff(0, retry_after=30.0) >= 30.0
    assert tasks.backoff(0, retry_after=10_000.0) == DEFAULT_RETRY.max_s


def test_the_retry_cap_stays_under_the_lease():
    assert DEFAULT_RETRY.max_s < load_settings().stuck_after_s


@pytest.fixture
def decided(sessions, merchants, monkeypatch):
    """A decided return with a lease, and the tasks' context on the test database."""
    ctx = Context(settings=load_settings(), merchants=merchants, sessions=sessions, enqueue=lambda *a: None)
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id="77", state=lc.DECIDED, decision="process", units=[],
                     rma_lines=[])
        lc.set_wait(ret, lc.Wait.STEP, utcnow() + timedelta(seconds=ctx.settings.stuck_after_s))
        s.add(ret)
        s.commit()
        return ret.id


def test_a_step_that_keeps_failing_is_retried_by_its_policy_then_parked(decided, sessions, monkeypatch):
    calls, leases = [], []

    def failing(ctx, name, return_id):
        calls.append(name)
        with sessions() as s:
            leases.append(lc_time(s.get(Return, return_id).next_attempt_at))
        raise RetryableError("loop", "Loop answered 503")

    monkeypatch.setattr(tasks.steps, "run_step", failing)
    monkeypatch.setattr(tasks, "backoff", lambda retries, retry_after=None, policy=DEFAULT_RETRY: 120.0)
    tasks.STEP_TASKS["act_in_loop"].apply(args=[decided])
    assert calls == ["act_in_loop"] * (DEFAULT_RETRY.max_retries + 1)
    assert leases == sorted(leases) and leases[-1] > leases[0]  # each retry keeps the row leased
    with sessions() as s:
        ret = s.get(Return, decided)
        assert ret.state == lc.NEEDS_ATTENTION and ret.attention_step == "act_in_loop"
        assert f"still failing after {DEFAULT_RETRY.max_retries} retries" in ret.attention_reason
        assert ret.waiting_for == lc.Wait.PERSON and ret.next_attempt_at is None


def test_a_final_refusal_parks_at_once_without_retrying(decided, sessions, monkeypatch):
    from integration.errors import FinalError

    calls = []

    def refused(ctx, return_id):
        calls.append(return_id)
        raise FinalError("loop", "The return is not open", status=422)

    monkeypatch.setitem(tasks.steps.BY_NAME, "act_in_loop", _with_run(tasks.steps.BY_NAME["act_in_loop"], refused))
    tasks.STEP_TASKS["act_in_loop"].apply(args=[decided])
    assert calls == [decided]
    with sessions() as s:
        ret = s.get(Return, decided)
        assert ret.state == lc.NEEDS_ATTENTION and "LOOP answered 422" in ret.attention_reason


def _with_run(step, fn):
    from dataclasses import replace

    fn.requires = step.requires
    return replace(step, run=fn)


def lc_time(value):
    from integration.workflow.runner import as_utc

    return as_utc(value)
