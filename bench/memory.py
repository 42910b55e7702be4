"""4. Memory: peak resident memory of the worker processes while 10,000 returns are waiting.

The real stack (`Stack`, Celery prefork workers with the Procfile's 4 processes each) runs its
beat schedule fast: receipts polled every second, the sweep every 2 s, the Loop returns pull
every 5 s. Phase 1 (the baseline): the workers idle on an empty database. Then 10,000 returns
waiting for goods are written to the database (9,000 `transmitted`, 1,000 `partially_received`
inside their grace period, with their receipts, so the sweep's due-check has a full batch to
load every time), the two workers are restarted so their peaks start afresh, and phase 2
samples them for as long.

Each Celery worker is a main process and its pool children (the processes that run tasks);
we sample VmRSS and read VmHWM (the kernel's peak) from /proc for every one of them, every
0.2 s, and report the largest single process and the sum over the worker.
"""
from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text, update

from stack.processes import Stack

from .common import Result, Row, children, fill_open_returns, proc_pss_kib, proc_status

WAITING = 10_000
PARTIAL = 1_000
PHASE_S = 25.0
WORKERS = ("worker1", "loopworker1")
ENV = {"RECEIPT_POLL_INTERVAL_S": "1", "SWEEP_INTERVAL_S": "2", "RECONCILE_INTERVAL_S": "5",
       "PARTIAL_GRACE_S": "259200"}


class Sampler:
    """Peak RSS per process of each worker, sampled until stopped."""

    def __init__(self, stack: Stack, names=WORKERS, every_s: float = 0.2):
        self.stack = stack
        self.names = names
        self.every_s = every_s
        self.peaks: dict[str, dict[int, int]] = {n: {} for n in names}  # KiB, per pid
        self.mains: dict[str, int] = {}
        self.concurrent: dict[str, int] = dict.fromkeys(names, 0)  # largest simultaneous RSS sum
        self.concurrent_pss: dict[str, int] = dict.fromkeys(names, 0)  # the same in PSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for name in self.names:
                main = self.stack.procs[name].pid
                self.mains[name] = main
                now_total = now_pss = 0
                for pid in [main, *children(main)]:
                    st = proc_status(pid)
                    if not st:
                        continue
                    peak = max(st.get("VmHWM", 0), st.get("VmRSS", 0))
                    self.peaks[name][pid] = max(self.peaks[name].get(pid, 0), peak)
                    now_total += st.get("VmRSS", 0)
                    now_pss += proc_pss_kib(pid)
                self.concurrent[name] = max(self.concurrent[name], now_total)
                self.concurrent_pss[name] = max(self.concurrent_pss[name], now_pss)

    def summary(self) -> dict[str, dict]:
        out = {}
        for name in self.names:
            per_pid = self.peaks[name]
            main = self.mains.get(name)
            kids = {pid: kib for pid, kib in per_pid.items() if pid != main}
            out[name] = {"main_mib": per_pid.get(main, 0) / 1024,
                         "largest_child_mib": max(kids.values(), default=0) / 1024,
                         "largest_mib": max(per_pid.values(), default=0) / 1024,
                         "children_seen": len(kids),
                         "total_mib": self.concurrent[name] / 1024,
                         "total_pss_mib": self.concurrent_pss[name] / 1024}
        return out


def _fill(database_url: str) -> float:
    """10,000 returns waiting for goods; 1,000 of them partly received (first receipt an hour
    ago, so still inside the 72-hour grace period), with their receipts."""
    from integration.store.db import get_engine
    from integration.store.models import Receipt, Return

    started = time.monotonic()
    then = datetime.now(UTC) - timedelta(days=2)
    fill_open_returns(database_url, WAITING, now=then)
    engine = get_engine(database_url)
    first = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(select(Return.id, Return.rma_number).order_by(Return.id)
                                          .limit(PARTIAL))]
        rmas = [r[0] for r in conn.execute(select(Return.rma_number).order_by(Return.id).limit(PARTIAL))]
        conn.execute(update(Return).where(Return.id.in_(ids)).values(
            state="partially_received", first_receipt_at=first))
        conn.execute(insert(Receipt), [
            {"merchant": "demo", "receipt_number": 500_000 + i, "ra_number": rma,
             "received_at": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "lines": [{"receipt_line_number": 1, "ra_line_number": 1, "sku_number": 4,
                        "style_number": "CB11D10", "color": "BLUE", "size": "S", "upc": "099999000054",
                        "qty_received": 2, "condition": "GOOD", "disposition": "RESTOCK",
                        "unexpected": False, "note": None}],
             "stored_at": first} for i, rma in enumerate(rmas)])
        waiting = conn.execute(text("SELECT count(*) FROM returns WHERE state IN "
                                    "('transmitted', 'partially_received')")).scalar()
    assert waiting == WAITING, waiting
    return time.monotonic() - started


def run(phase_s: float = PHASE_S, progress=print, db: str = "sqlite") -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    out: dict = {"workdir": str(workdir), "phase_s": phase_s}
    with Stack(workdir, extra_env=ENV, database=db) as stack:
        out["concurrency"] = stack.worker_concurrency
        out["database"] = stack.database_label() if db == "postgres" else "SQLite (WAL), a file in the stack's directory"
        time.sleep(3)  # let the workers finish booting before the clock starts
        with Sampler(stack) as idle:
            time.sleep(phase_s)
        out["idle"] = idle.summary()
        out["fill_s"] = _fill(stack.env["DATABASE_URL"])
        progress(f"    {WAITING} waiting returns written in {out['fill_s']:.0f} s; restarting the workers")
        for name in WORKERS:  # fresh processes: their peaks start from zero
            stack.restart(name)
        time.sleep(3)
        with Sampler(stack) as loaded:
            time.sleep(phase_s)
        out["loaded"] = loaded.summary()
        out["tasks"] = _task_counts(workdir / "logs")
        with stack_engine(stack) as conn:
            out["states"] = dict(conn.execute(text("SELECT state, count(*) FROM returns GROUP BY state")).all())
    return out


class stack_engine:
    def __init__(self, stack: Stack):
        from sqlalchemy import create_engine

        self.engine = create_engine(stack.env["DATABASE_URL"])

    def __enter__(self):
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()
        self.engine.dispose()


def _task_counts(logs: Path) -> dict[str, int]:
    import json

    counts: dict[str, int] = {}
    for path in logs.glob("*worker*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"duration_s"' in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                key = f"{entry.get('task')} {entry.get('state')}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def main(phase_s: float = PHASE_S, progress=print, db: str = "sqlite") -> Result:
    result = Result("Memory")
    data = run(phase_s, progress=progress, db=db)
    idle, loaded = data["idle"], data["loaded"]
    largest = max(v["largest_mib"] for v in loaded.values())
    largest_idle = max(v["largest_mib"] for v in idle.values())
    ok = largest < 150
    result.rows.append(Row(
        "4. Memory: peak RSS of a worker process, 10,000 returns waiting",
        f"{largest:.0f} MB (largest single process)", f"{largest_idle:.0f} MB idle, empty database",
        f"{largest / largest_idle:.2f}", "< 150 MB", ok))
    result.details += [
        f"Database: {data['database']}. "
        f"Celery prefork workers, {data['concurrency']} pool processes each (the Procfile's default). "
        f"Each phase samples for {phase_s:.0f} s; beat polls receipts every 1 s, sweeps every 2 s and pulls "
        "Loop's returns list every 5 s. The loaded phase starts with freshly restarted workers. "
        "MB here are MiB of resident memory: per process the peak (VmHWM, or the largest VmRSS "
        "sampled); for the whole worker the largest sum seen at one time, as RSS (which counts the "
        "pages a forked pool shares once per process) and as PSS (shared pages split, so it adds up).",
        "",
        "| Worker | Phase | main process | largest pool process | pool processes seen | "
        "whole worker, RSS sum | whole worker, PSS sum |",
        "|---|---|---|---|---|---|---|",
        *[f"| `{name}` | {phase} | {v[name]['main_mib']:.0f} MB | {v[name]['largest_child_mib']:.0f} MB | "
          f"{v[name]['children_seen']} | {v[name]['total_mib']:.0f} MB | {v[name]['total_pss_mib']:.0f} MB |"
          for name in WORKERS for phase, v in (("idle, empty database", idle), ("10,000 waiting", loaded))],
        "",
        f"Tasks run over both phases: {', '.join(f'{k}: {n}' for k, n in sorted(data['tasks'].items()))}. "
        f"Returns at the end: {data['states']}.",
    ]
    if not ok:
        result.notes.append(f"The largest worker process peaked at {largest:.0f} MB, over 150 MB.")
    result.extra = data
    return result
