"""One Redis connection pool per process, and a name on every connection it opens.

Heroku Redis counts clients against a small limit (20 on the mini plan), so the service's
processes share what they can: in each process the Loop rate limiter, the periodic-job locks,
the worker metrics, the web's /healthz and /metrics, doctor and the CLI use one pool, and so do
Celery's own commands (publishing, acknowledging) through workers.broker. docs/operations.md,
*Connection budget*, counts what each process type holds.

The pool blocks, rather than opening another connection, when all of its connections are in
use (`BlockingConnectionPool`): a process never holds more than `REDIS_POOL_SIZE` of them. One
is enough for a process that runs one thing at a time (a Celery pool process, beat, the CLI) and
for the web process, whose threads each hold it for a command; a Celery worker's main process
needs two (kombu restores unacknowledged messages inside a WATCH transaction that looks up the
queue bindings on a second connection), which `configure()` gives it.

Every connection is named (`CLIENT SETNAME`) `rlm-loop:<process>:<purpose>`, so `CLIENT LIST`
on the server says which process type holds what: `<process>` is the Heroku dyno (`web.1`,
`worker.2`, `run.1234`) or the process type, with `-pool` for a Celery pool process.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.connection import parse_url

from integration.infra import redis_tls
from integration.settings import env_float, env_int

_lock = threading.Lock()
_pools: dict[tuple, redis.BlockingConnectionPool] = {}
_clients: dict[tuple, redis.Redis] = {}
_role: dict[str, str] = {"name": ""}
_connections: dict[str, int] = {"n": 0}

HEALTH_CHECK_INTERVAL_S = 25  # as kombu's: a connection idle longer is PINGed before use


def configure(role: str, connections: int | None = None) -> None:
    """Name this process (`web`, `worker`, `loopworker-pool`, `beat`, `cli`, ...) for its
    connections, and how many its pool needs at least (REDIS_POOL_SIZE may only raise it)."""
    _role["name"] = role
    if connections is not None:
        _connections["n"] = connections


def role() -> str:
    """The role given to configure(), "" if none yet."""
    return _role["name"]


def process_role() -> str:
    """What this process is, for connection names (Redis client names, PostgreSQL's
    application_name): the Heroku dyno if there is one, else the configured role."""
    role = _role["name"] or "process"
    dyno = os.environ.get("DYNO")
    if dyno:
        # `worker.1`, plus `-pool` in a Celery pool process of that dyno.
        return dyno + ("-pool" if role.endswith("-pool") else "")
    return role


def client_name(purpose: str) -> str:
    """`rlm-loop:<process>:<purpose>`; Redis allows no spaces in a client name."""
    return f"rlm-loop:{process_role()}:{purpose}".replace(" ", "_")


def pool_size() -> int:
    """REDIS_POOL_SIZE, never below what the process needs (2 in a worker's main process)."""
    needed = _connections["n"] or 1
    configured = env_int("REDIS_POOL_SIZE", None)
    return needed if configured is None else max(needed, configured)


def _pool_timeout() -> float:
    return env_float("REDIS_POOL_TIMEOUT_S", 10.0)


def _socket_timeout() -> float:
    # Bounds every command (a publish, a limiter call, a health check) on a server that stopped
    # answering; no command of the service blocks on the server by design.
    return env_float("REDIS_SOCKET_TIMEOUT_S", 10.0)


def endpoint(*, host: str, port: int, db: int, username: str | None, password: str | None,
             tls: bool) -> tuple:
    """What identifies a server and a login: the key of the shared pool."""
    return (host or "127.0.0.1", int(port or 6379), int(db or 0), username or None, password or None, tls)


def endpoint_of(url: str) -> tuple:
    parts = parse_url(url)
    return endpoint(host=parts.get("host", "127.0.0.1"), port=parts.get("port", 6379),
                    db=parts.get("db", 0), username=parts.get("username"),
                    password=parts.get("password"), tls=url.startswith("rediss://"))


def shared_pool(where: tuple) -> redis.BlockingConnectionPool:
    """This process's pool for the server and login `where` (see `endpoint`). A forked child
    gets a pool of its own, named after its own role."""
    key = (os.getpid(), where)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            host, port, db, username, password, tls = where
            kwargs: dict[str, Any] = {}
            if tls:
                kwargs = {"connection_class": redis.SSLConnection, "ssl_cert_reqs": redis_tls.cert_reqs()}
            pool = redis.BlockingConnectionPool(
                max_connections=pool_size(), timeout=_pool_timeout(),
                host=host, port=port, db=db, username=username, password=password,
                socket_timeout=_socket_timeout(), socket_connect_timeout=5, socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_INTERVAL_S,
                client_name=client_name("shared"), **kwargs)
            _pools[key] = pool
        return pool


def client(url: str) -> redis.Redis:
    """The process's client for `url` (responses as bytes), on its shared pool."""
    where = endpoint_of(url)
    key = (os.getpid(), where)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis(connection_pool=shared_pool(where))
    return found

