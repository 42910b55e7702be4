"""The step table: every workflow step, when it runs, and what happens if its message is lost.

Each return carries an explicit schedule (lifecycle.Wait, `next_attempt_at`): when a step is sent
the return gets a lease (`step`, due STUCK_AFTER_S later); the step, when it has done its work,
sets the next wait. The sweeper (workflow/sweeper.py) selects returns whose `next_attempt_at`
has passed and sends the step of their state again: a lost message costs one lease, never the
return. After MAX_EVENT_ATTEMPTS re-sends the return is parked at that step for a person.

Everything else about steps is derived from this table: which step moves each state on, where an
operator's retry resumes, the Celery task names, queues and routes, and the retry policies.
docs/architecture.md shows it as a table (`describe()`; a test keeps the two equal).
"""
from __future__ import annotations

from dataclasses import dataclass

from integration.errors import FinalError, NoSlot, StepFailed
from integration.settings import env_float
from integration.workflow import lifecycle as lc
from integration.workflow.context import Context
from integration.workflow.loop_action import act_in_loop
from integration.workflow.receiving import decide
from integration.workflow.rma import cancel_rma, close_rma, create_rma, transmit_rma
from integration.workflow.runner import StepFn, defer_step, park_return


@dataclass(frozen=True)
class RetryPolicy:
    """How a step's task retries a transient failure (5xx, timeout, connection error, 429, a
    conflict with another worker): exponential backoff with full jitter, a server's Retry-After
    as a floor; after `max_retries` the return is parked at the step (a final 4xx parks at once).
    `max_s` stays under STUCK_AFTER_S, so a task waiting for its retry keeps its lease."""

    max_retries: int = 10
    base_s: float = env_float("TASK_RETRY_BASE_S", 2.0)
    max_s: float = env_float("TASK_RETRY_MAX_S", 600.0)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn  # decorated with @step(requires=...): a no-op outside those states
    task: str  # the Celery task's name (Flower shows it)
    queue: str  # by the system it waits on: erp (RLM), loop (Loop's rate limit), default
    resume_from: str  # where an operator's retry puts a return parked at this step
    on_entry: bool  # sent as soon as a return enters one of `requires`
    when: str  # when it runs, in words
    retry: RetryPolicy = DEFAULT_RETRY

    @property
    def requires(self) -> frozenset[str]:
        return self.run.requires


STEPS: tuple[Step, ...] = (
    Step("create_rma", create_rma, "rlm.create_rma", "erp", lc.RECEIVED, on_entry=True,
         when="a new return is recorded (webhook or Loop pull)"),
    Step("transmit_rma", transmit_rma, "rlm.transmit_rma", "erp", lc.RMA_CREATED, on_entry=True,
         when="the RA is created but not yet transmitted"),
    Step("decide", decide, "integration.decide", "default", lc.TRANSMITTED, on_entry=False,
         when="a receipt for its RA is stored; or its goods wait is due: every unit in, the "
              "partial grace over, or the RA expired"),
    Step("act_in_loop", act_in_loop, "loop.act_in_loop", "loop", lc.DECIDED, on_entry=True,
         when="the return is decided"),
    Step("close_rma", close_rma, "rlm.close_rma", "erp", lc.LOOP_ACTIONED, on_entry=True,
         when="Loop has the outcome; after a process call, Loop shows the return closed "
              "(webhook, or read on the loop_outcome schedule until the window ends)"),
    Step("cancel_rma", cancel_rma, "rlm.cancel_rma", "erp", lc.CANCELLING, on_entry=True,
         when="Loop cancelled or expired the return before goods arrived"),
)
BY_NAME = {s.name: s for s in STEPS}

# Inbox rows are handled by a task of their own, with the same lease and re-send (by the sweeper).
HANDLE_EVENT = "loop.handle_event"
DISPATCH_EVENTS = "inbox.dispatch_events"


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    every: str  # the Settings attribute holding its interval in seconds
    what: str
    # The task run once per merchant, which `task` fans out to (None: one run for everyone), so
    # one merchant's slow system never delays another's turn.
    per_merchant: str | None = None


PERIODIC: tuple[Periodic, ...] = (  # names are RedBeat's keys: keep them across releases
    Periodic("poll-rlm-receipts", "rlm.poll_receipts", "receipt_poll_interval_s",
             "RLM's receipt feed, per merchant", per_merchant="rlm.poll_receipts_for"),
    Periodic("sweep", "integration.sweep", "sweep_interval_s",
             "send the step of every due return and inbox row"),
    Periodic("reconcile-loop", "loop.reconcile", "reconcile_interval_s",
             "Loop's returns list since the last pull", per_merchant="loop.reconcile_for"),
    Periodic("purge-old-data", "integration.purge", "retention_interval_s",
             "retention: old bodies and details cleared"),
)

# Task name -> queue. Periodic jobs get a queue of their own so a backlog of RLM work never
# delays the receipt poll behind it; handling a webhook is database work and must not wait
# behind Loop actions queued for a rate-limit slot.
TASK_QUEUES: dict[str, str] = {
    **{s.task: s.queue for s in STEPS},
    **{p.task: "periodic" for p in PERIODIC},
    **{p.per_merchant: "periodic" for p in PERIODIC if p.per_merchant},
    HANDLE_EVENT: "default",
    DISPATCH_EVENTS: "default",
}
QUEUES = ("periodic", "default", "erp", "loop")


def run_step(ctx: Context, name: str, return_id: int) -> None:
    """Run one step by name; a final failure parks the return at it, a merchant without a free
    slot reschedules it (other retryable errors propagate to the task, which retries by the
    step's policy)."""
    step = BY_NAME[name]
    try:
        step.run(ctx, return_id)
    except NoSlot as exc:  # our own per-merchant limit: nothing was sent, come back later
        defer_step(ctx, return_id, name, step.requires, exc.retry_after or 1.0)
    except StepFailed as exc:
        park_return(ctx, return_id, name, str(exc))
    except FinalError as exc:
        park_return(ctx, return_id, name, f"{exc.system.upper()} answered {exc.status}: {exc.message}")


def task_name(step: str) -> str:
    """The task that runs a step, by the step's name (`handle_event` included)."""
    return HANDLE_EVENT if step == "handle_event" else BY_NAME[step].task


def step_for_state(state: str) -> str | None:
    """The step that moves a return on from `state` (None: it waits for a person, or is done)."""
    return next((s.name for s in STEPS if state in s.requires), None)


def step_on_entry(state: str) -> str | None:
    """The step sent as soon as a return enters `state` (None: it waits on a schedule)."""
    return next((s.name for s in STEPS if state in s.requires and s.on_entry), None)


IF_LOST = ("its lease (`next_attempt_at`, STUCK_AFTER_S after sending) comes due and the sweeper "
           "sends it again; parked after MAX_EVENT_ATTEMPTS re-sends")


def describe() -> str:
    """The table as docs/architecture.md shows it."""
    rows = ["| step | runs in | when | if its message is lost | task (queue) | retry resumes from |",
            "|---|---|---|---|---|---|"]
    for s in STEPS:
        states = ", ".join(f"`{state}`" for state in lc.State if state in s.requires)
        rows.append(f"| `{s.name}` | {states} | {s.when} | {IF_LOST} | `{s.task}` ({s.queue}) | "
                    f"`{s.resume_from}` |")
    return "\n".join(rows)
