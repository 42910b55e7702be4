"""`make chaos`: many returns through the real stack while things break, then the figures.

Injected, at random from a printed seed: RLM 5xx (some as HTML pages), hangs past the client's
read timeout and `code: 0` refusals; Loop 429s and 5xx; every webhook delivered three times and
some `return.updated` before their `return.created`; Celery pool processes killed with SIGKILL
mid-task and a whole worker killed; the broker stopped and restarted (append-only file on);
the receiver restarted. Then it checks that every return reached its expected end state, with
exactly one RMA in RLM and at most one Loop action (exactly one where one is expected), and
that nothing is stuck in the inbox.
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
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from .demo import Demo, Scenario, demo_env
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
# Env for the stack under chaos: short client timeouts so injected hangs cost seconds.
CHAOS_ENV = {"RLM_READ_TIMEOUT_S": "2", "LOOP_READ_TIMEOUT_S": "5", "STUCK_AFTER_S": "20",
             "MAX_EVENT_ATTEMPTS": "30"}


@dataclass
class Figures:
    seed: int
    returns: int = 0
    reached_expected: int = 0
    wrong: list[dict] = field(default_factory=list)
    rmas_not_one: list[str] = field(default_factory=list)
    loop_actions_wrong: list[str] = field(default_factory=list)
    stuck_events: int = 0
    parked_then_retried: int = 0
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
                and self.rlm_fault_share >= 0.10 and len(self.disruptions) >= 5)

    def lines(self) -> list[str]:
        return [
            f"seed                                   {self.seed}",
            f"returns                                {self.returns}",
            f"reached their expected end state       {self.reached_expected} (must be {self.returns})",
            f"returns without exactly one RMA        {len(self.rmas_not_one)} (must be 0)",
            f"returns with a wrong Loop action count {len(self.loop_actions_wrong)} (must be 0)",
            f"events stuck in the inbox              {self.stuck_events} (must be 0)",
            f"parked by injected refusals, retried   {self.parked_then_retried}",
            f"RLM calls answered with a fault        {self.faults.get('rlm', 0)} of {self.faults.get('rlm_calls', 0)}"
            f" ({self.rlm_fault_share:.0%}, must be at least 10%)",
            f"Loop calls answered 429 or 5xx         {self.faults.get('loop', 0)}",
            f"disruptions                            {', '.join(self.disruptions)}",
            f"time taken                             {self.elapsed_s:.1f} s",
        ]


def inject_faults(stack: Stack, rng: random.Random) -> None:
    """Probabilistic fault rules in both sandboxes, seeded from the run's seed."""
    rlm = [
        {"match": {"path": "/return-authorizations*"}, "status": 503, "html": True, "probability": 0.1},
        {"match": {"path": "/receipts*"}, "status": 502, "probability": 0.12},
        {"match": {"path": "/items*"}, "status": 500, "probability": 0.1},
        {"match": {"method": "POST", "path": "/return-authorizations/*"}, "timeout": True, "after": True,
         "probability": 0.05},
        {"match": {"method": "POST", "path": "/return-authorizations"}, "code0": "Invalid Warehouse",
         "probability": 0.03},
    ]
    requests.post(f"{stack.url('rlm')}/_sim/faults", json={"seed": rng.randrange(1 << 30)}, timeout=5)
    for rule in rlm:
        requests.post(f"{stack.url('rlm')}/_sim/faults", json=rule, timeout=5).raise_for_status()
    loop = [{"match": {"path": "/warehouse/*"}, "status": 429, "retry_after": 1, "probability": 0.06},
            {"match": {"path": "/warehouse/*"}, "status": 503, "probability": 0.04}]
    requests.post(f"{stack.url('loop')}/_sim/faults", json={"rules": loop, "seed": rng.randrange(1 << 30)},
                  timeout=5).raise_for_status()
    requests.post(f"{stack.url('loop')}/_sim/config", timeout=5,
                  json={"duplicate_deliveries": 3}).raise_for_status()


def clear_faults(stack: Stack) -> dict:
    """Switch every fault off; returns how many fired in each sandbox."""
    rlm = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=5).json()
    # POSTing no rules lists the current ones with their counters.
    loop = requests.post(f"{stack.url('loop')}/_sim/faults", json={"rules": []}, timeout=5).json()
    requests.delete(f"{stack.url('rlm')}/_sim/faults", timeout=5)
    requests.delete(f"{stack.url('loop')}/_sim/faults", timeout=5)
    requests.post(f"{stack.url('loop')}/_sim/config", json={"duplicate_deliveries": 1}, timeout=5)
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
    """Play the operator: retry returns parked by an injected refusal, now that RLM behaves."""
    from integration.context import Context
    from integration.db import session_factory
    from integration.maintenance import retry_return
    from integration.merchants import load_merchants
    from integration.settings import load_settings
    from workers.names import STEP_TASK_NAMES, publisher as make_publisher

    publisher = make_publisher(stack.redis_url)
    ctx = Context(settings=load_settings(), merchants=load_merchants(),
                  sessions=session_factory(stack.env["DATABASE_URL"]),
                  enqueue=lambda step, i: publisher.send_task(STEP_TASK_NAMES[step], args=[i]))
    retried = 0
    for t in tracked:
        demo.refresh(t)
        if t.state == "needs_attention" and t.scenario.expected != "needs_attention":
            retry_return(ctx, "demo", t.loop_id)
            demo.refresh(t)  # no longer settled: the driver follows it again
            retried += 1
    return retried


def run_chaos(count: int = 500, seed: int = 1, workdir: str | None = None, out=sys.stdout) -> Figures:
    started = time.monotonic()
    rng = random.Random(seed)
    fig = Figures(seed=seed, returns=count)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rlm-loop-chaos-"))
    print(f"chaos: {count} returns, seed {seed}, stack in {base}", file=out, flush=True)
    # Faults slow everything down, this driver included: the warehouse's second parcel needs a
    # longer grace period, more so in a large batch.
    grace = max(30.0, 0.15 * count)
    env = {**demo_env(count), **CHAOS_ENV, "RMA_EXPIRY_DAYS": "30", "PARTIAL_GRACE_S": str(grace)}
    with Stack(base, workers=2, extra_env=env, capture_broker=True) as stack:
        inject_faults(stack, rng)
        demo = Demo(stack, out, CHAOS_SCENARIOS)
        tracked = demo.create_all(count)
        done = threading.Event()
        chaos = threading.Thread(target=disrupt, args=(stack, rng, fig.disruptions, done), daemon=True)
        chaos.start()
        demo.drive(tracked, timeout=240 + count * 1.2)
        done.set()
        chaos.join()
        fig.faults = clear_faults(stack)
        fig.parked_then_retried = retry_parked(stack, demo, tracked)
        demo.drive(tracked, timeout=120)
        rows = [demo.outcome(t) for t in tracked]
        for row, t in zip(rows, tracked):
            if row["matched"]:
                fig.reached_expected += 1
            else:
                fig.wrong.append(row)
            if "RAs in RLM" in row["actual"] or _ras(stack, t.loop_id) != 1:
                fig.rmas_not_one.append(t.loop_id)
            if "Loop action" in row["actual"]:
                fig.loop_actions_wrong.append(t.loop_id)
        fig.stuck_events = _stuck_events(stack)
    fig.elapsed_s = time.monotonic() - started
    for line in fig.lines():
        print(line, file=out)
    for row in fig.wrong[:20]:
        print("  not as expected:", json.dumps(row), file=out)
    print("chaos: PASS" if fig.ok else "chaos: FAIL", file=out, flush=True)
    return fig


def _ras(stack: Stack, loop_id: str) -> int:
    stats = requests.get(f"{stack.url('rlm')}/_sim/stats", timeout=10).json()
    return stats["ras_per_external_ref"].get("90", {}).get(loop_id, 0)


def _stuck_events(stack: Stack) -> int:
    engine = create_engine(stack.env["DATABASE_URL"])
    with engine.connect() as conn:
        return conn.execute(text(
            "select count(*) from webhook_events where status in ('received', 'processing')")).scalar()
