"""`make chaos`: many returns through the real stack while things break, then the figures.

Injected, at random from a printed seed:
- RLM: 5xx (some as HTML pages), hangs past the client's read timeout and `code: 0` refusals
  before anything is applied; RA create / transmit / close / cancel applied and then the answer
  lost (the connection dropped mid-answer, or held past the read timeout).
- Loop: 429s and 5xx before anything is applied; process / remove / flag / close / note applied
  and then the answer lost the same two ways; a processing queue taking seconds to minutes
  (longer than the settle time); some returns' processing failing twice in a row, the second
  failure webhook byte-for-byte the first; some webhook deliveries held back for minutes while
  later ones go out; every webhook delivered three times and some `return.updated` before
  their `return.created`.
- The stack: Celery pool processes killed with SIGKILL mid-task and a whole worker killed; the
  broker stopped and restarted (append-only file on); the receiver restarted.

Then it checks, from the sandboxes' own ledgers rather than our database: Loop process / remove
calls accepted per return at most one per processing attempt (exactly one successful one where
the return should be processed), flags likewise, and exactly one RA per return in RLM; and that
every return reached its expected end state, that every return is finished or parked with a
reason, that nothing is stuck in the inbox, and that no return ever sat past the deadline of
what it was waiting for. On SQLite or, with `database="postgres"`, a throwaway PostgreSQL.
"""
from __future__ import annotations

import json
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import func, select, text

from integration.store.db import get_engine
from integration.store.models import Return

from .demo import Demo, Scenario, demo_env, ras_for
from .processes import Stack

CHAOS_SCENARIOS = [
    Scenario("exact", "processed", ("exact",)),
    Scenario("partial_then_complete", "processed", ("partial", "remainder")),
    Scenario("missing_after_grace", "flagged", ("partial",)),
    Scenario("damaged", "flagged", ("damaged",)),
    Scenario("wrong_item", "flagged", ("wrong_item",)),
    Scenario("over_received", "flagged", ("over",)),
    Scenario("cancelled_before_receipt", "cancelled", loop_admin="cancelled"),
    Scenario("processed_by_person_in_loop", "by_person", loop_admin="closed"),
    Scenario("exact_shuffled_webhooks", "processed", ("exact",), webhooks="shuffled"),
]
# Env for the stack under chaos: short client timeouts so injected hangs cost seconds, and
# Loop's outcome read every few seconds (the window is set per run, longer than Loop's slowest
# processing, as production's six hours are).
CHAOS_ENV = {"RLM_READ_TIMEOUT_S": "2", "LOOP_READ_TIMEOUT_S": "5", "STUCK_AFTER_S": "20",
             "MAX_EVENT_ATTEMPTS": "30", "LOOP_OUTCOME_CHECK_MAX_S": "20"}


@dataclass(frozen=True)
class Hostility:
    """How slow Loop's processing queue is, and so how long we wait for its outcome."""

    processing_max_s: float = 180.0  # a few minutes, far beyond the settle time
    outcome_window_s: float = 300.0  # must exceed the slowest processing, as in production

    def loop_config(self, seed: int) -> dict:
        return {"seed": seed, "duplicate_deliveries": 3,
                "process_delay_s": {"min_s": 2, "median_s": self.processing_max_s / 8,
                                    "max_s": self.processing_max_s},
                "processing_failure_rate": 0.06, "processing_failure_repeat": 2,
                "webhook_delay": {"probability": 0.05, "min_s": 20, "max_s": self.processing_max_s}}


# Loop calls that process a return: `remove` takes units off and processes the rest.
PROCESSING_CALLS = ("process", "remove")


@dataclass
class Figures:
    seed: int
    returns: int = 0
    database: str = ""
    peak_db_connections: int | None = None
    reached_expected: int = 0
    wrong: list[dict] = field(default_factory=list)
    rmas_not_one: list[str] = field(default_factory=list)
    loop_actions_wrong: list[str] = field(default_factory=list)
    stuck_events: int = 0
    # From the sandboxes' ledgers and our operator API (loop ids, with what was wrong).
    ledger_processing_wrong: list[str] = field(default_factory=list)
    ledger_flag_wrong: list[str] = field(default_factory=list)
    ledger_ras_not_one: list[str] = field(default_factory=list)
    not_settled: list[str] = field(default_factory=list)
    past_deadline: int = 0  # the most returns seen at once waiting past their own deadline
    parked_then_retried: int = 0
    processing_failures: int = 0
    # From our timelines: Loop calls applied but answered ambiguously, and what became of them.
    answers_lost: int = 0
    outcome_unknown_parked: int = 0
    resend_confirmed: int = 0
    faults: dict = field(default_factory=dict)
    disruptions: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rlm_fault_share(self) -> float:
        return self.faults.get("rlm", 0) / max(1, self.faults.get("rlm_calls", 0))

    @property
    def ok(self) -> bool:
        return (self.reached_expected == self.returns and not self.rmas_not_one
                and not self.loop_actions_wrong and self.stuck_events == 0
                and not self.ledger_processing_wrong and not self.ledger_flag_wrong
                and not self.ledger_ras_not_one and not self.not_settled
                and self.past_deadline == 0
                and self.rlm_fault_share >= 0.10 and len(self.disruptions) >= 5)

    def lines(self) -> list[str]:
        connections = ([] if self.peak_db_connections is None else
                       [f"database connections at peak           {self.peak_db_connections}"])
        return [
            f"database                               {self.database}",
            *connections,
            f"seed                                   {self.seed}",
            f"returns                                {self.returns}",
            f"reached their expected end state       {self.reached_expected} (must be {self.returns})",
            f"returns without exactly one RMA        {len(self.rmas_not_one)} (must be 0)",
            f"returns with a wrong Loop action count {len(self.loop_actions_wrong)} (must be 0)",
            f"events stuck in the inbox              {self.stuck_events} (must be 0)",
            f"Loop ledger: process+remove accepted   {len(self.ledger_processing_wrong)} (must be 0)"
            f"  returns with more than 1 per processing attempt, or none that succeeded where"
            f" processed is expected",
            f"Loop ledger: flag accepted             {len(self.ledger_flag_wrong)} (must be 0)"
            f"  returns with more than 1, or not 1 where flagged is expected",
            f"RLM ledger: RAs per return             {len(self.ledger_ras_not_one)} (must be 0)"
            f"  returns without exactly one",
            f"not terminal, nor parked with a reason {len(self.not_settled)} (must be 0)",
            f"waiting past their own deadline        {self.past_deadline} (must be 0)",
            f"parked, retried by the operator        {self.parked_then_retried}",
            f"Loop processing failures (webhooks)    {self.processing_failures}",
            f"process calls answered ambiguously     {self.answers_lost}  returns; waited for, never re-sent"
            f" on our own",
            f"  of them parked 'outcome unknown'     {self.outcome_unknown_parked}",
            f"re-sends confirmed by the operator     {self.resend_confirmed}",
            f"RLM calls answered with a fault        {self.faults.get('rlm', 0)} of {self.faults.get('rlm_calls', 0)}"
            f" ({self.rlm_fault_share:.0%}, must be at least 10%)",
            f"Loop calls faulted (before or after)   {self.faults.get('loop', 0)}",
            f"disruptions                            {', '.join(self.disruptions)}",
            f"time taken                             {self.elapsed_s:.1f} s",
        ]


def inject_faults(stack: Stack, rng: random.Random, hostility: Hostility) -> None:
    """Probabilistic fault rules in both sandboxes, seeded from the run's seed. Each faults a
    call either before it is applied (nothing happened) or after (it happened, the answer is
    lost): the two look the same to the caller."""
    ra, ra_action = "/return-authorizations", "/return-authorizations/*"
    rlm = [
        {"match": {"path": f"{ra}*"}, "status": 503, "html": True, "probability": 0.08},
        {"match": {"path": "/receipts*"}, "status": 502, "probability": 0.12},
        {"match": {"path": "/items*"}, "status": 500, "probability": 0.1},
        {"match": {"method": "POST", "path": ra_action}, "timeout": True, "after": True, "probability": 0.04},
        {"match": {"method": "POST", "path": ra_action}, "drop": True, "after": True, "probability": 0.04},
        {"match": {"method": "POST", "path": ra_action}, "timeout": True, "probability": 0.02},
        {"match": {"method": "POST", "path": ra}, "drop": True, "after": True, "probability": 0.04},
        {"match": {"method": "POST", "path": ra}, "code0": "Invalid Warehouse", "probability": 0.03},
    ]
    requests.post(f"{stack.url('rlm')}/_sim/faults", json={"seed": rng.randrange(1 << 30)}, timeout=5)
    for rule in rlm:
        requests.post(f"{stack.url('rlm')}/_sim/faults", json=rule, timeout=5).raise_for_status()
    action = "/warehouse/return/*/"
    loop = [{"match": {"path": "/warehouse/*"}, "status": 429, "retry_after": 1, "probability": 0.06},
            {"match": {"path": "/warehouse/*"}, "status": 503, "probability": 0.03}]
    for what in ("process", "remove", "flag", "close", "note"):
        match = {"method": "POST", "path": action + what}
        loop += [{"match": match, "after": True, "drop": True, "probability": 0.05},
                 {"match": match, "after": True, "timeout": True, "probability": 0.03}]
    requests.post(f"{stack.url('loop')}/_sim/faults", json={"rules": loop, "seed": rng.randrange(1 << 30)},
                  timeout=5).raise_for_status()
    requests.post(f"{stack.url('loop')}/_sim/config", timeout=5,
                  json=hostility.loop_config(rng.randrange(1 << 30))).raise_for_status()


def clear_faults(stack: Stack) -> dict:
    """Switch every fault off; returns how many fired in each sandbox."""
    rlm = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=5).json()
    # POSTing no rules lists the current ones with their counters.
    loop = requests.post(f"{stack.url('loop')}/_sim/faults", json={"rules": []}, timeout=5).json()
    requests.delete(f"{stack.url('rlm')}/_sim/faults", timeout=5)
    requests.delete(f"{stack.url('loop')}/_sim/faults", timeout=5)
    # Loop's queue stays as slow, and failures as likely, while the operator retries.
    requests.post(f"{stack.url('loop')}/_sim/config", json={"duplicate_deliveries": 1, "webhook_delay": None},
                  timeout=5)
    return {"rlm": rlm.get("faults_fired", 0), "rlm_calls": sum(rlm.get("requests", {}).values()),
            "loop": sum(r.get("fired", 0) for r in loop.get("rules", []))}


def disrupt(stack: Stack, rng: random.Random, log: list[str], done: threading.Event) -> None:
    """Kill and restart parts of the stack while returns are in flight."""
    plan = [("kill pool process", 4), ("kill pool process", 6), ("restart broker", 8),
            ("restart receiver", 6), ("kill worker", 6), ("kill pool process", 5)]
    for what, pause in plan:
        if done.wait(pause + rng.random() * 2):
            return
        if what == "kill pool process":
            name = rng.choice([n for n in stack.procs if "worker" in n])
            children = stack.worker_children(name)
            if children:
                import os

                os.kill(rng.choice(children), signal.SIGKILL)
                log.append(f"SIGKILL {name} pool process")
        elif what == "kill worker":
            name = rng.choice([n for n in stack.procs if n.startswith("worker")])
            stack.kill(name)
            log.append(f"SIGKILL {name}")
        elif what == "restart broker":
            stack.restart_broker(down_s=2)
            log.append("broker restarted")
        elif what == "restart receiver":
            stack.restart("web", down_s=1)
            log.append("receiver restarted")


def retry_parked(stack: Stack, demo: Demo, tracked) -> int:
    """Play the operator: retry returns parked by an injected refusal, a processing failure or
    an unknown outcome, after looking in Loop that nothing is still being processed for them
    (as docs/operations.md asks)."""
    from integration.merchants import load_merchants
    from integration.ops.actions import retry_return
    from integration.settings import load_settings
    from integration.store.db import session_factory
    from integration.workflow.context import Context
    from workers.names import publisher as make_publisher

    publisher = make_publisher(stack.redis_url)
    ctx = Context.for_service(load_settings(), load_merchants(), session_factory(stack.env["DATABASE_URL"]),
                              lambda task, args, **kw: publisher.send_task(task, args=args, **kw), None)
    retried = 0
    for t in tracked:
        demo.refresh(t)
        if t.state != "needs_attention" or t.scenario.expected == "needs_attention":
            continue
        loop = requests.get(f"{stack.url('loop')}/_sim/returns/{t.loop_id}", timeout=10).json()
        if loop.get("processing_pending"):
            continue  # Loop is still working on it: look again later
        retry_return(ctx, "demo", t.loop_id, operator="chaos")
        demo.refresh(t)  # no longer settled: the driver follows it again
        retried += 1
    return retried


def run_chaos(count: int = 500, seed: int = 1, workdir: str | None = None, out=sys.stdout,
              database: str = "sqlite", hostility: Hostility = Hostility()) -> Figures:
    started = time.monotonic()
    rng = random.Random(seed)
    fig = Figures(seed=seed, returns=count)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rlm-loop-chaos-"))
    print(f"chaos: {count} returns, seed {seed}, database {database}, stack in {base}", file=out, flush=True)
    # Faults slow everything down, this driver included: the warehouse's second parcel needs a
    # longer grace period, more so in a large batch (30 s was too short for 100 returns on a busy
    # 2-core machine: a second parcel came after it, and its return was flagged).
    grace = max(60.0, 0.15 * count)
    env = {**demo_env(count), **CHAOS_ENV, "RMA_EXPIRY_DAYS": "30", "PARTIAL_GRACE_S": str(grace),
           "LOOP_OUTCOME_WINDOW_S": str(hostility.outcome_window_s)}
    with Stack(base, workers=2, extra_env=env, capture_broker=True, database=database) as stack:
        fig.database = stack.database_label()
        print(f"chaos: database {fig.database}", file=out, flush=True)
        sampled = threading.Event()
        samplers = [threading.Thread(target=fn, args=(stack, fig, sampled), daemon=True)
                    for fn in (_sample_connections, _sample_deadlines)]
        for sampler in samplers:
            sampler.start()
        try:
            _drive_under_chaos(stack, rng, fig, count, out, hostility)
        finally:
            sampled.set()
            for sampler in samplers:
                sampler.join()
    fig.elapsed_s = time.monotonic() - started
    for line in fig.lines():
        print(line, file=out)
    for row in fig.wrong[:20]:
        print("  not as expected:", json.dumps(row), file=out)
    for what, found in (("Loop process+remove", fig.ledger_processing_wrong),
                        ("Loop flag", fig.ledger_flag_wrong), ("RLM RAs", fig.ledger_ras_not_one),
                        ("not settled", fig.not_settled)):
        for detail in found[:20]:
            print(f"  {what}: {detail}", file=out)
    print("chaos: PASS" if fig.ok else "chaos: FAIL", file=out, flush=True)
    return fig


def _drive_under_chaos(stack: Stack, rng: random.Random, fig: Figures, count: int, out,
                       hostility: Hostility) -> None:
    inject_faults(stack, rng, hostility)
    demo = Demo(stack, out, CHAOS_SCENARIOS)
    tracked = demo.create_all(count)
    done = threading.Event()
    chaos = threading.Thread(target=disrupt, args=(stack, rng, fig.disruptions, done), daemon=True)
    chaos.start()
    demo.drive(tracked, timeout=240 + count * 1.2 + hostility.outcome_window_s)
    done.set()
    chaos.join()
    fig.faults = clear_faults(stack)
    # A return whose processing fails twice needs two retries; one whose outcome stayed
    # unknown needs the window to pass first.
    for _ in range(4):
        retried = retry_parked(stack, demo, tracked)
        fig.parked_then_retried += retried
        demo.drive(tracked, timeout=120 + hostility.outcome_window_s)
        if not retried and all(t.state != "needs_attention" or t.scenario.expected == "needs_attention"
                               for t in tracked):
            break
    rows = [demo.outcome(t) for t in tracked]
    for row, t in zip(rows, tracked, strict=True):
        if row["matched"]:
            fig.reached_expected += 1
        else:
            fig.wrong.append(row)
        if "RAs in RLM" in row["actual"] or _ras(stack, t.loop_id) != 1:
            fig.rmas_not_one.append(t.loop_id)
        if "Loop action" in row["actual"]:
            fig.loop_actions_wrong.append(t.loop_id)
    fig.stuck_events = _stuck_events(stack)
    _count_ambiguous_answers(stack, fig)
    check_ledgers(stack, demo, tracked, fig)


def check_ledgers(stack: Stack, demo: Demo, tracked, fig: Figures) -> None:
    """What the sandboxes recorded, whatever our database says; and where each return ended.

    Loop (`GET /_sim/stats`, per return: accepted calls per action, and `refused`): at most one
    accepted process-or-remove and one accepted flag per return, exactly one where the scenario
    expects the return processed or flagged. RLM (`GET /_sim/stats`): exactly one RA per return.
    Our operator API: every return complete or cancelled, or parked (needs_attention) with a
    reason; only we know a return is parked.
    """
    loop = requests.get(f"{stack.url('loop')}/_sim/stats", timeout=10).json()["returns"]
    rlm = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=10).json()
    for t in tracked:
        calls = loop.get(t.loop_id, {})
        processing = sum(calls.get(action, 0) for action in PROCESSING_CALLS)
        # A call Loop reported failed (return.processing.failed) may be sent again on a retry.
        failed = calls.get("processing_failed", 0)
        fig.processing_failures += failed
        flags = calls.get("flag", 0)
        expected = t.scenario.expected
        if processing - failed > 1 or (expected == "processed" and processing - failed != 1):
            fig.ledger_processing_wrong.append(
                f"{t.loop_id} ({t.scenario.name}): {processing} accepted, {failed} failed in "
                f"processing, {calls.get('refused', 0)} refused")
        if flags > 1 or (expected == "flagged" and flags != 1):
            fig.ledger_flag_wrong.append(
                f"{t.loop_id} ({t.scenario.name}): {flags} accepted, {calls.get('refused', 0)} refused")
        ras = ras_for(rlm, t.loop_id)
        if ras != 1:
            fig.ledger_ras_not_one.append(f"{t.loop_id} ({t.scenario.name}): {ras} RAs")
        problem = _not_settled(stack, demo, t.loop_id)
        if problem:
            fig.not_settled.append(f"{t.loop_id} ({t.scenario.name}): {problem}")


def _not_settled(stack: Stack, demo: Demo, loop_id: str) -> str | None:
    r = demo.http.get(f"{stack.url('web')}/api/returns/{loop_id}", headers=stack.admin_headers(), timeout=10)
    if r.status_code != 200:
        return f"our API answered {r.status_code}"
    view = r.json()
    state = view.get("state")
    if state in ("complete", "cancelled"):
        return None
    if state == "needs_attention":
        return None if (view.get("attention_reason") or "").strip() else "parked without a reason"
    return f"still {state}"


def _sample_connections(stack: Stack, fig: Figures, done: threading.Event) -> None:
    """The most client connections PostgreSQL had open at once during the run (one a second)."""
    if stack.postgres is None:
        return
    fig.peak_db_connections = 0
    while True:
        try:
            fig.peak_db_connections = max(fig.peak_db_connections, stack.postgres.connections())
        except Exception:  # a sample missed is no failure of the run
            pass
        if done.wait(1.0):
            return


def _sample_deadlines(stack: Stack, fig: Figures, done: threading.Event) -> None:
    """Every few seconds: returns still waiting (not finished, not parked) past the deadline of
    what they wait for. The sweeper's next run parks such a return, so allow one sweep's slack."""
    engine = get_engine(stack.env["DATABASE_URL"])
    slack = 2 * float(stack.env.get("SWEEP_INTERVAL_S", "60")) + 10
    while not done.wait(5.0):
        cutoff = datetime.now(UTC) - timedelta(seconds=slack)
        try:
            with engine.connect() as conn:
                late = conn.execute(select(func.count()).select_from(Return).where(
                    Return.wait_deadline < cutoff,
                    Return.state.not_in(("complete", "cancelled", "needs_attention")))).scalar() or 0
        except Exception:  # the database may be busy; the next sample counts
            continue
        fig.past_deadline = max(fig.past_deadline, late)


def _ras(stack: Stack, loop_id: str) -> int:
    stats = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=10).json()
    return ras_for(stats, loop_id)


def _count_ambiguous_answers(stack: Stack, fig: Figures) -> None:
    """From the timelines: returns whose process call's answer was lost, those parked for an
    unknown outcome, and those whose re-send an operator confirmed by a retry at the Loop step
    (after an unknown outcome or a processing failure; nothing is sent if Loop shows it done)."""
    engine = get_engine(stack.env["DATABASE_URL"])
    counts = {"lost": "cause = 'sent to Loop, answer lost'",
              "parked": "to_state = 'needs_attention' and detail like 'outcome of the % call unknown%'",
              "resent": "cause = 're-send confirmed by an operator'"}
    with engine.connect() as conn:
        found = {k: conn.execute(text(f"select count(distinct return_id) from timeline where {where}")).scalar()
                 for k, where in counts.items()}
    fig.answers_lost, fig.outcome_unknown_parked, fig.resend_confirmed = (
        found["lost"] or 0, found["parked"] or 0, found["resent"] or 0)


def _stuck_events(stack: Stack) -> int:
    engine = get_engine(stack.env["DATABASE_URL"])  # disposed when the stack stops
    with engine.connect() as conn:
        return conn.execute(text(
            "select count(*) from webhook_events where status in ('received', 'processing')")).scalar()
