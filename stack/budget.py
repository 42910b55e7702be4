"""The connection budget: what each process type holds on Redis and PostgreSQL, at most.

docs/operations.md (*Connection budget*) prints these numbers, and tests/ops/test_connection_budget.py
runs the formation inside a plan's limits and checks every process type against them. Measured with
`CLIENT LIST` (each connection is named `rlm-loop:<process>:<purpose>`) and `pg_stat_activity`
(`application_name` `rlm-loop:<process>`); why each is what it is, is said beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

# Connection limits of the Heroku plans. Redis: "Heroku Redis technical characterization" (mini
# is the former hobby-dev: 20). PostgreSQL: Heroku's plans page as remembered, not re-read here
# (essential-0's 20 was reported from a running app): check `heroku pg:info` ("Connections: n/20") and
# `heroku redis:info` on the plan you have; `rlm-loop doctor` reads the real limits.
REDIS_PLAN_CLIENTS = {"mini": 20, "premium-0": 40, "premium-1": 80, "premium-2": 200, "premium-3": 400}
POSTGRES_PLAN_CONNECTIONS = {"essential-0": 20, "essential-1": 20, "essential-2": 40, "standard-0": 120,
                             "standard-2": 400}


@dataclass(frozen=True)
class Formation:
    web_dynos: int = 1
    web_concurrency: int = 2  # gunicorn processes per web dyno (WEB_CONCURRENCY)
    web_threads: int = 4  # gunicorn --threads
    worker_dynos: int = 1
    loopworker_dynos: int = 1
    celery_concurrency: int = 3  # pool processes per worker dyno (CELERY_CONCURRENCY)
    beat: int = 1
    flower: int = 0
    db_pool_size: int = 4  # DB_POOL_SIZE
    db_max_overflow: int = 0  # DB_MAX_OVERFLOW


# Redis clients, at most, per process.
REDIS_WEB = 1  # the shared pool: publishing (the relay), /healthz, /metrics; threads take turns
REDIS_WORKER_MAIN = 4  # BRPOP 1 + remote control's SUBSCRIBE 1 + shared pool up to 2 (acks, restores)
REDIS_WORKER_POOL_PROCESS = 1  # the shared pool: publishing, limiter, locks, metrics
REDIS_BEAT = 2  # the shared pool (publishing) + RedBeat's client (schedule and lock)
REDIS_FLOWER = 3  # events SUBSCRIBE 1 + shared 1 + its queue view's own client 1
REDIS_ONE_OFF = 2  # doctor or a CLI command: shared 1 + a reply queue's BRPOP while asking workers


def redis_clients(f: Formation) -> int:
    workers = f.worker_dynos + f.loopworker_dynos
    return (f.web_dynos * f.web_concurrency * REDIS_WEB
            + workers * (REDIS_WORKER_MAIN + f.celery_concurrency * REDIS_WORKER_POOL_PROCESS)
            + f.beat * REDIS_BEAT + f.flower * REDIS_FLOWER)


def db_per_web_process(f: Formation) -> int:
    """One connection per thread in the database at once, capped by the pool."""
    return min(f.web_threads, f.db_pool_size + f.db_max_overflow)


DB_WORKER_POOL_PROCESS = 1  # one task at a time, one session at a time
DB_ONE_OFF = 1  # the release phase (alembic upgrade head), doctor, a CLI command
DB_AT_START = 1  # worker main processes, beat, Flower: the merchants in effect, read once at start


def db_connections(f: Formation) -> int:
    """The formation's processes at their most (worker main processes, beat and Flower hold a
    connection only for a moment at start)."""
    workers = f.worker_dynos + f.loopworker_dynos
    return (f.web_dynos * f.web_concurrency * db_per_web_process(f)
            + workers * f.celery_concurrency * DB_WORKER_POOL_PROCESS
            + (workers + f.beat + f.flower) * DB_AT_START)
