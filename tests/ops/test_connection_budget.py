"""The default formation runs inside the plans app.json asks for (Redis mini, Postgres essential-0).

app.json's formation (web with WEB_CONCURRENCY gunicorn processes, worker and loopworker with
CELERY_CONCURRENCY pool processes each, beat) runs against a Valkey started with the Redis plan's
`maxclients` and a PostgreSQL where the service's login, without superuser rights as on a hosted
plan, has exactly the PostgreSQL plan's connections. Returns go through the whole workflow while
an operator runs `doctor`; a sampler (on the superuser's reserved slots, and one Redis client,
counted) reads `INFO clients`, `CLIENT LIST` and `pg_stat_activity` all along. Every return must
end as expected, no log may say a connection was refused, the peaks must stay within the plans,
and each process type within stack/budget.py's numbers (docs/operations.md's table).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis

from stack import budget
from stack.demo import SCENARIOS, Demo, demo_env
from stack.processes import APP_ROLE, ROOT, Stack
from tests.system import postgres_bindir

pytestmark = pytest.mark.stack

REFUSED = ("max number of clients reached", "too many clients", "too many connections",
           "remaining connection slots are reserved")


def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text())


def plan_limits() -> tuple[int, int]:
    plans = {a["plan"].split(":")[0]: a["plan"].split(":")[1] for a in app_json()["addons"]}
    return (budget.REDIS_PLAN_CLIENTS[plans["heroku-redis"]],
            budget.POSTGRES_PLAN_CONNECTIONS[plans["heroku-postgresql"]])


def default_formation() -> budget.Formation:
    app = app_json()
    env, formation = app["env"], app["formation"]
    return budget.Formation(
        web_dynos=formation["web"]["quantity"], web_concurrency=int(env["WEB_CONCURRENCY"]["value"]),
        worker_dynos=formation["worker"]["quantity"], loopworker_dynos=formation["loopworker"]["quantity"],
        celery_concurrency=int(env["CELERY_CONCURRENCY"]["value"]), beat=formation["beat"]["quantity"],
        flower=formation["flower"]["quantity"],
        db_pool_size=int(env.get("DB_POOL_SIZE", {}).get("value", 4)),
        db_max_overflow=int(env.get("DB_MAX_OVERFLOW", {}).get("value", 0)))


def process_type(name: str) -> str:
    """`rlm-loop:worker1-pool:shared` -> `worker-pool`: the stack numbers its workers."""
    process = name.split(":")[1] if name.startswith("rlm-loop:") else "other"
    return process.replace("worker1", "worker")


class Sampler:
    """Peaks of the whole server and of each process type, every 0.2 s."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.client = redis.Redis.from_url(stack.redis_url)
        self.redis_peak = 0
        self.at_redis_peak: list[str] = []  # CLIENT LIST then, for the report
        self.unnamed: set[str] = set()
        self.db_peak = 0
        self.redis_by_type: Counter[str] = Counter()  # the most seen at once, per type
        self.db_by_type: Counter[str] = Counter()
        self.db_now: Counter[str] = Counter()  # the last sample's, per type
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # report, keep sampling
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.2)

    def sample(self) -> None:
        connected = int(self.client.info("clients")["connected_clients"])
        clients = self.client.client_list()
        if connected > self.redis_peak:
            self.redis_peak = connected
            self.at_redis_peak = [f"{c.get('name') or '-'} {c['cmd']} age={c['age']}" for c in clients]
        per_process = Counter(process_type(c.get("name") or "") for c in clients)
        self.unnamed.update(f"{c['cmd']} age={c['age']} idle={c['idle']}" for c in clients if not c.get("name"))
        for kind, n in per_process.items():
            self.redis_by_type[kind] = max(self.redis_by_type[kind], n)
        assert self.stack.postgres is not None
        apps = self.stack.postgres.connections_by_application(APP_ROLE)
        self.db_peak = max(self.db_peak, sum(apps.values()))
        per_type: Counter[str] = Counter()
        for name, n in apps.items():
            per_type[process_type(name)] += n
        for kind, n in per_type.items():
            self.db_by_type[kind] = max(self.db_by_type[kind], n)
        self.db_now = per_type


def run_doctor(stack: Stack) -> str:
    done = subprocess.run([sys.executable, "-m", "cli", "doctor"], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_the_default_formation_runs_inside_the_plans_connection_limits(tmp_path):
    postgres_bindir()  # or skipped (failed under CI=true) without PostgreSQL
    formation = default_formation()
    redis_limit, db_limit = plan_limits()
    # The plan's arithmetic first: the formation at its most, plus one-off processes.
    assert budget.redis_clients(formation) + budget.REDIS_ONE_OFF <= redis_limit
    assert budget.db_connections(formation) + 2 * budget.DB_ONE_OFF <= db_limit

    workdir = tmp_path / "stack"
    stack = Stack(workdir, database="postgres", web_processes=formation.web_concurrency,
                  worker_concurrency=formation.celery_concurrency, redis_maxclients=redis_limit,
                  db_connection_limit=db_limit, extra_env=demo_env(len(SCENARIOS)))
    with stack, Sampler(stack) as sampler:
        demo = Demo(stack, out=open(Path(workdir) / "demo.out", "w"))
        tracked = demo.create_all(len(SCENARIOS))
        doctor: list[str] = []  # an operator checks the service while it works
        halfway = threading.Timer(15, lambda: doctor.append(run_doctor(stack)))
        halfway.start()
        demo.drive(tracked, timeout=300)
        halfway.join()
        rows = [demo.outcome(t) for t in tracked]
        sampler.sample()

    mismatched = [r for r in rows if not r["matched"]]
    assert not mismatched, json.dumps(mismatched, indent=1)
    logs = {p.name: p.read_text(errors="replace") for p in (workdir / "logs").glob("*.log")}
    assert "postgres.log" in logs and "web.log" in logs
    refused = [f"{name}: {line.strip()}" for name, text in logs.items() for line in text.splitlines()
               if any(r in line.lower() for r in REFUSED)]
    assert not refused, "\n".join(refused[:20])
    assert not sampler.errors, sampler.errors[:5]

    report = (f"redis peak {sampler.redis_peak}/{redis_limit} {dict(sampler.redis_by_type)}; "
              f"database peak {sampler.db_peak}/{db_limit} {dict(sampler.db_by_type)}")
    print(report)
    (Path(workdir) / "budget.txt").write_text("\n".join([report, *sorted(sampler.at_redis_peak), "unnamed:", *sorted(sampler.unnamed), *doctor]))
    assert sampler.redis_peak <= redis_limit, report
    assert sampler.db_peak <= db_limit, report

    # Each process type within its budget (docs/operations.md): `other` is the sampler itself.
    web = formation.web_concurrency
    c = formation.celery_concurrency
    assert sampler.redis_by_type["web"] <= web * budget.REDIS_WEB, report
    for kind in ("worker", "loopworker"):
        assert sampler.redis_by_type[kind] <= budget.REDIS_WORKER_MAIN, report
        assert sampler.redis_by_type[f"{kind}-pool"] <= c * budget.REDIS_WORKER_POOL_PROCESS, report
        assert sampler.db_by_type[f"{kind}-pool"] <= c * budget.DB_WORKER_POOL_PROCESS, report
        # A worker's main process runs no task: it reads the merchants at start, then holds none.
        assert sampler.db_by_type[kind] <= budget.DB_AT_START, report
        assert sampler.db_now[kind] == 0, report
    assert sampler.redis_by_type["beat"] <= budget.REDIS_BEAT, report
    assert sampler.redis_by_type["cli"] <= budget.REDIS_ONE_OFF, report
    assert sampler.db_by_type["web"] <= web * budget.db_per_web_process(formation), report
    assert sampler.db_by_type["beat"] <= budget.DB_AT_START, report
    assert sampler.db_now["beat"] == 0, report

    # doctor saw the same limits and said how much room is left.
    assert doctor, "doctor did not run"
    out = doctor[0]
    assert f"of {redis_limit} clients in use" in out, out
    assert f"of {db_limit} connections in use" in out, out
