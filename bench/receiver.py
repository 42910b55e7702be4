"""1. Receiver throughput: the webhook receiver under gunicorn against a do-nothing baseline.

One gunicorn server with the Procfile's settings (2 workers x 4 threads, gthread), a real Valkey
(append-only file on, as in production) and SQLite (WAL) in a temporary directory, or with
`--db postgres` a database in a throwaway PostgreSQL cluster (bench/database.py), serving both
`POST /webhooks/loop/demo` and the baseline `POST /bench/noop` (web/baseline.py, registered only
with BENCH_BASELINE=1), which answers 202 and does nothing. Both get the same bodies and
headers: distinct, signed `return.created` deliveries built before the clock starts, sent by a
load generator in separate processes (bench/loadgen.py).

- Maximum rate: closed loop, several connection counts; the best of each endpoint.
- Latency under load: open loop (paced) at 80% of the receiver's maximum, latency counted from
  when each request was due.
- Durability: after the runs, every 202 must be a committed `webhook_events` row whose id is in
  a message waiting in the broker (the receiver's relay sends several ids to a message). No
  Celery worker runs here, so the messages just queue up.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from integration.infra.embedded_redis import free_port, start_valkey
from integration.store.schema import migrate
from stack.processes import wait_http
from workers.names import QUEUES

from .common import ROOT, Result, Row, children, cpu_seconds, ms, percentile
from .database import Databases

SECRET = "bench-webhook-secret"
RECEIVER = "/webhooks/loop/demo"
BASELINE = "/bench/noop"
GUNICORN = ["--workers", "2", "--threads", "4", "--timeout", "30"]  # the Procfile's `web`
LOADGEN_PROCESSES = 2


class Server:
    def __init__(self, workdir: Path, database_url: str, app: str = "web:create_app()", db_cpu=lambda: 0.0):
        self.workdir = workdir
        self.db_cpu = db_cpu  # CPU seconds of PostgreSQL's server processes so far (0 on SQLite)
        (workdir / "logs").mkdir(parents=True, exist_ok=True)  # also makes workdir
        self.valkey, self.redis_url = start_valkey(workdir / "valkey")
        self.database_url = database_url
        migrate(self.database_url)
        self.port = free_port()
        env = {**os.environ, "DATA_DIR": str(workdir), "DATABASE_URL": self.database_url,
               "REDIS_URL": self.redis_url, "LOOP_WEBHOOK_SECRET": SECRET, "BENCH_BASELINE": "1",
               "PYTHONUNBUFFERED": "1"}
        env.pop("MERCHANTS_FILE", None)
        log = open(workdir / "logs" / "web.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{self.port}", *GUNICORN, app],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc)

    def cpu_s(self) -> float:
        """CPU time used so far by the gunicorn master and its workers."""
        return cpu_seconds(self.proc.pid) + sum(cpu_seconds(pid) for pid in children(self.proc.pid))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.valkey.terminate()
        self.valkey.wait(timeout=10)


class Load:
    """Runs the load generator in LOADGEN_PROCESSES processes and merges what they measured."""

    def __init__(self, server: Server, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.next_id = 10_000_000
        self.accepted = 0  # 202s from the receiver, warm-up included

    def run(self, path: str, *, duration_s: float, concurrency: int, rate: float | None = None,
            warmup_s: float = 1.0, expect_rate: float = 3000.0) -> dict:
        procs = []
        server_cpu0, db_cpu0 = self.server.cpu_s(), self.server.db_cpu()
        per_proc_count = int(expect_rate * (duration_s + 1) / LOADGEN_PROCESSES) + 100
        for n in range(LOADGEN_PROCESSES):
            spec = {"host": "127.0.0.1", "port": self.server.port, "path": path, "secret": SECRET,
                    "duration_s": duration_s, "warmup_s": warmup_s, "id_start": self.next_id,
                    "count": per_proc_count,
                    "concurrency": max(1, concurrency // LOADGEN_PROCESSES),
                    "rate": rate / LOADGEN_PROCESSES if rate else None}
            self.next_id += per_proc_count
            spec_path = self.workdir / f"loadgen-{n}.json"
            spec_path.write_text(json.dumps(spec))
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(spec_path)],
                                          cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        # Each process signs its bodies first, which takes a while on a busy machine: start them
        # together, or their windows would only partly overlap and their rates add up to more than
        # the server answered at once.
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()  # "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        parts = []
        for proc in procs:
            out, _ = proc.communicate(timeout=duration_s + 120)
            parts.append(json.loads(out.strip().splitlines()[-1]))
        server_cpu = self.server.cpu_s() - server_cpu0
        db_cpu = self.server.db_cpu() - db_cpu0
        answered = max(1, sum(sum(p["answered"].values()) for p in parts))
        latencies = [x for p in parts for x in p["latencies"]]
        statuses: dict[str, int] = {}
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        if path == RECEIVER:
            self.accepted += sum(p["answered"].get("202", 0) for p in parts)
        measured = max(p["measured_s"] for p in parts)
        return {"path": path, "concurrency": concurrency, "rate": rate, "rps": len(latencies) / measured,
                "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "n": len(latencies),
                "statuses": statuses, "errors": errors, "exhausted": any(p["exhausted"] for p in parts),
                "sent": sum(p["sent"] for p in parts), "loadgen_cpu_s": sum(p["cpu_s"] for p in parts),
                "measured_s": measured,
                # CPU the server spent per answered request (warm-up and ramp included), and on
                # PostgreSQL its server processes (SQLite's work is in the server's CPU already).
                "server_cpu_ms": 1000 * server_cpu / answered, "db_cpu_ms": 1000 * db_cpu / answered}


def describe(run: dict) -> str:
    mode = f"open loop {run['rate']:.0f}/s" if run["rate"] else f"closed loop, {run['concurrency']} connections"
    extra = ""
    if run["errors"]:
        extra += f", errors {run['errors']}"
    if run["exhausted"]:
        extra += ", ran out of prepared payloads"
    db = f" + {run['db_cpu_ms']:.2f} ms in PostgreSQL" if run.get("db_cpu_ms") else ""
    return (f"| `{run['path']}` | {mode} | {run['rps']:.0f} | {ms(run['p50'])} | {ms(run['p99'])} | "
            f"{run['server_cpu_ms']:.2f} ms{db} | {run['n']} | {json.dumps(run['statuses'])}{extra} |")


def main(quick: bool = False, db: str = "sqlite") -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    with Databases(db, workdir / "databases") as dbs:
        return _main(dbs, workdir, quick)


def _main(dbs: Databases, workdir: Path, quick: bool) -> Result:
    result = Result("Receiver throughput")
    duration = 4.0 if quick else 8.0
    levels = (8, 16) if not quick else (16,)
    database = dbs.label()
    server = Server(workdir / "real", dbs.new("receiver"), db_cpu=dbs.server_cpu_s)
    load = Load(server, workdir)
    try:
        for path in (BASELINE, RECEIVER):  # warm both (imports, connections, SQLite pages)
            load.run(path, duration_s=1.5, concurrency=4, warmup_s=0.5, expect_rate=1000)
        closed = []
        for concurrency in levels:
            for path in (BASELINE, RECEIVER):
                closed.append(load.run(path, duration_s=duration, concurrency=concurrency))
        best = {path: max((r for r in closed if r["path"] == path), key=lambda r: r["rps"])
                for path in (BASELINE, RECEIVER)}
        # 80% of the maximum the receiver sustains now: measured again just before, since what
        # a shared machine leaves to it drifts from minute to minute.
        fresh = load.run(RECEIVER, duration_s=duration / 2, concurrency=max(levels))
        closed.append(fresh)
        target_rate = 0.8 * fresh["rps"]
        open_runs = [load.run(path, duration_s=duration * 1.5, concurrency=32, rate=target_rate,
                              expect_rate=target_rate * 1.05)
                     for path in (RECEIVER, BASELINE)]
        stored = _check_stored(server, load)
        phases = _phases(server, dbs)
    finally:
        server.stop()

    base, recv = best[BASELINE], best[RECEIVER]
    ratio = recv["rps"] / base["rps"]
    at80 = open_runs[0]
    all_ok = stored["rows"] == stored["accepted"] == stored["queued"]
    result.rows += [
        Row("1. Receiver: max throughput", f"{recv['rps']:.0f} req/s (p50 {ms(recv['p50'])}, p99 {ms(recv['p99'])})",
            f"{base['rps']:.0f} req/s (p50 {ms(base['p50'])}, p99 {ms(base['p99'])})",
            f"{ratio:.2f}", ">= 0.50, every event stored and enqueued",
            ratio >= 0.5 and all_ok),
        Row("1. Receiver: p99 at 80% of its max", f"p99 {ms(at80['p99'])} at {at80['rps']:.0f} req/s "
            f"(80% of {fresh['rps']:.0f}, measured just before; p50 {ms(at80['p50'])})", f"baseline at the same rate: p99 {ms(open_runs[1]['p99'])}",
            f"{at80['p99'] / open_runs[1]['p99']:.1f}x", "p99 < 50 ms", at80["p99"] < 0.050),
    ]
    result.details += [
        f"One gunicorn server (`{' '.join(GUNICORN)}`, i.e. gthread, as in the Procfile), Valkey with "
        f"its append-only file, the database: {database}. The load generator runs in "
        f"{LOADGEN_PROCESSES} separate processes (`bench/loadgen.py`, `http.client` keep-alive "
        "connections), sending distinct `return.created` deliveries signed before the clock starts. "
        "No Celery worker runs: the messages queue up in the broker. Server CPU per request is the "
        "gunicorn processes' CPU time over the run divided by the requests answered"
        + ("; `+ x ms in PostgreSQL` is the database server's processes' CPU the same way (it shares "
           "the 2 cores; SQLite's work is inside the gunicorn processes)." if dbs.kind == "postgres" else "."),
        "",
        "| Endpoint | Load | req/s | p50 | p99 | server CPU per request | requests | statuses |",
        "|---|---|---|---|---|---|---|---|",
        *[describe(r) for r in closed + open_runs],
        "",
        f"Stored and enqueued: {stored['accepted']} deliveries answered 202 to the receiver; "
        f"{stored['rows']} `webhook_events` rows committed, {stored['queued']} of their ids in the "
        f"{stored['messages']} messages waiting in the broker ({'all of them' if all_ok else 'MISMATCH'}; "
        "the relay sends a lone row as `loop.handle_event`, several as one `inbox.dispatch_events`). "
        f"Load generator CPU: {sum(r['loadgen_cpu_s'] for r in closed + open_runs):.1f} s over these runs "
        "(it shares the 2 cores with the server).",
    ]
    if phases:
        result.details += [
            "",
            "Where the receiver's CPU goes, each step timed on its own in one process (`bench/phases.py`, "
            "no HTTP server; ms of CPU per delivery" + ("; PostgreSQL's own work, in its server processes, is "
                                                        "not in these" if dbs.kind == "postgres" else "") + "):",
            "",
            "| Step | CPU |",
            "|---|---|",
            *[f"| {name} | {value:.3f} ms |" for name, value in phases.items()],
        ]
    if ratio < 0.5:
        result.notes.append(
            f"Receiver throughput is {ratio:.2f} of the baseline, short of the 0.50 target by "
            f"{(0.5 - ratio) / 0.5:.0%} ({recv['server_cpu_ms']:.1f} ms of server CPU per delivery against "
            f"{base['server_cpu_ms']:.2f} ms for the baseline).")
    tail = tail_note(at80, open_runs[1], dbs.kind)
    if tail:
        result.notes.append(tail)
    result.extra = {"best": best, "fresh": fresh, "open": open_runs, "stored": stored, "phases": phases,
                    "workdir": str(workdir), "database": dbs.kind}
    return result


def tail_note(at80: dict, baseline: dict, db: str) -> str | None:
    """Why the p99 at 80% load is over 50 ms, from the run's own figures (None: it is not)."""
    if at80["p99"] < 0.050:
        return None
    if baseline["p99"] >= 0.8 * at80["p99"]:
        why = (f"the do-nothing endpoint at the same rate had a p99 of {ms(baseline['p99'])} too, so "
               "this tail is the machine's (the load generator, the server and the database on 2 shared "
               "cores preempting each other), not the receiver's own")
    elif at80["p50"] < 0.020 and db == "postgres":
        why = ("the median is fine, so this is a tail, not saturation: on PostgreSQL the writers take no "
               "shared lock (row locks only), so what is left is most likely the server's own processes "
               "and the load generator preempting the receiver on the 2 shared cores (inferred, not "
               "measured directly)")
    elif at80["p50"] < 0.020:
        why = ("the median is fine, so this is a tail, not saturation: a few deliveries waited far "
               "longer than the rest, most likely writers of the two gunicorn processes contending for "
               "SQLite's write lock (each process's own threads queue on a lock; see the recommendations)")
    else:
        why = ("requests were queueing (the median too is far above the baseline's): at that rate the "
               "receiver's CPU per delivery left no headroom on the shared 2 cores, where the load "
               "generator's 32 connections take more of them than the closed loop's 16 that set the rate")
    return (f"p99 at 80% of the maximum rate ({at80['rps']:.0f} req/s) is {ms(at80['p99'])}, over 50 ms by "
            f"{ms(at80['p99'] - 0.050)}; p50 {ms(at80['p50'])} against {ms(baseline['p50'])} for the baseline "
            f"at the same rate: {why}.")


def _phases(server: Server, dbs: Databases) -> dict[str, float]:
    url = dbs.new("phases")
    migrate(url)
    done = subprocess.run([sys.executable, "-m", "bench.phases", url, server.redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(done.stderr[-2000:], file=sys.stderr)
        return {}


def _check_stored(server: Server, load: Load) -> dict:
    """`queued`: how many of the `received` rows have their id in a waiting message."""
    engine = create_engine(server.database_url)
    with engine.connect() as conn:
        rows = set(conn.execute(text("SELECT id FROM webhook_events WHERE status = 'received'")).scalars())
    engine.dispose()
    client = redis.Redis.from_url(server.redis_url)
    deadline = time.monotonic() + 5  # the relay sends its last batch some milliseconds after the 202
    while True:
        ids, messages = _queued_event_ids(client)
        if rows <= ids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {"rows": len(rows), "queued": len(rows & ids), "messages": messages, "accepted": load.accepted}


def _queued_event_ids(client: redis.Redis) -> tuple[set[int], int]:
    """The inbox row ids in the broker's waiting messages, and how many messages carry them."""
    ids: set[int] = set()
    messages = 0
    for queue in QUEUES:
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]  # Celery protocol 2: [args, kwargs, embed]
            task = message["headers"]["task"]
            if task == "loop.handle_event":
                ids.add(args[0])
            elif task == "inbox.dispatch_events":
                ids.update(args[0])
            else:
                continue
            messages += 1
    return ids, messages
