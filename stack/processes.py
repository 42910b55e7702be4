"""Start, supervise and stop the real processes: Valkey, both sandboxes, gunicorn, Celery
workers and beat; on SQLite (a file in the workdir) or on a throwaway PostgreSQL cluster.

Every process logs to `<workdir>/logs/<name>.log`, so a run can be inspected (and scanned for
personal data) afterwards. Like a platform's dyno manager, a supervisor restarts any process
that dies unexpectedly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from integration.infra.embedded_redis import free_port, start_valkey, wait_until
from integration.loop.client import LoopClient
from integration.loop.webhooks import WEBHOOK_TRIGGERS
from integration.store import db

from .postgres import SUPERUSER_RESERVED, PostgresCluster, cluster_root, find_bindir

ROOT = Path(__file__).resolve().parent.parent
FIXED_PORTS = {"web": 8000, "loop": 8001, "rlm": 8002, "flower": 5555}

# Short schedules so the demo runs in about a minute; production uses the defaults.
FAST_ENV = {
    "RECEIPT_POLL_INTERVAL_S": "1",
    "SWEEP_INTERVAL_S": "2",
    "RECONCILE_INTERVAL_S": "30",
    "STUCK_AFTER_S": "30",
    "TASK_RETRY_MAX_S": "10",
    "PARTIAL_GRACE_S": "10",
    "LOOP_SETTLE_S": "5",
    "TASK_RETRY_BASE_S": "0.5",
    "REDBEAT_LOCK_TIMEOUT_S": "15",
}
DATABASES = ("sqlite", "postgres")
# As in the Procfile: no gossip (a Redis client per worker, for features the service does not
# use) and no mingle (a start-up exchange with other workers about revoked tasks; none are).
WORKER_FLAGS = ("--without-gossip", "--without-mingle")
POSTGRES_DATABASE = "integration"
APP_ROLE = "rlm_loop"  # the service's login with db_connection_limit: no superuser rights
# Connections this (driving) process may hold on the stack's database at once: the cached engine
# of the migrations and checks, a chaos run's connection sampler, and one spare.
DRIVER_CONNECTIONS = 3


@dataclass
class Stack:
    workdir: Path
    fixed_ports: bool = False
    fast: bool = True
    worker_concurrency: int = 4
    workers: int = 1
    flower: bool = False
    capture_broker: bool = False  # record every command the broker sees, for the PII scan
    database: str = "sqlite"  # sqlite: a file in the workdir | postgres: a throwaway cluster
    web_processes: int = 2
    web_threads: int = 4
    # A hosted plan's limits, to run the stack inside them: the Redis server's maxclients, and
    # the PostgreSQL connections the service may open (it then connects as a role without
    # superuser rights, APP_ROLE, as on a hosted plan; the superuser keeps its reserved slots
    # for the driver's own checks). None: room for everything, as before.
    redis_maxclients: int | None = None
    db_connection_limit: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    redis_url: str = ""
    restarts: dict[str, int] = field(default_factory=dict)
    postgres: PostgresCluster | None = None
    _postgres_link: Path | None = None
    _database_url: str = ""
    _stopping: threading.Event = field(default_factory=threading.Event)
    _paused: set[str] = field(default_factory=set)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    # --- starting ----------------------------------------------------------------------------
    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        for name in ("web", "loop", "rlm", "flower", "valkey"):
            # A port chosen by the caller stays (its merchants' configuration names it).
            self.ports[name] = self.ports.get(name) or (FIXED_PORTS.get(name, 0) if self.fixed_ports else 0)
            self.ports[name] = self.ports[name] or free_port()
        self._start_database()
        self._start_valkey()
        self.env = self._environment()
        self._init_database()
        py = [sys.executable, "-m"]
        self._spawn("loop", py + ["sandbox.loop", "--port", str(self.ports["loop"])])
        self._spawn("rlm", py + ["sandbox.rlm", "--port", str(self.ports["rlm"])])
        self._spawn("web", py + ["gunicorn", "-b", f"127.0.0.1:{self.ports['web']}",
                                 "-w", str(self.web_processes), "--threads", str(self.web_threads),
                                 "--access-logfile", "-", "web:create_app()"])
        for name, path in (("loop", "/_sim/clock"), ("rlm", "/_sim/clock"), ("web", "/healthz")):
            self._wait_serving(name, path)
        celery = py + ["celery", "-A", "workers.celery_app"]
        # Queues split by system: tasks waiting for a Loop rate-limit slot must never starve
        # the RLM polling and the decisions.
        for n in range(self.workers):
            for role, queues in (("worker", "periodic,default,erp"), ("loopworker", "loop")):
                name = f"{role}{n + 1}"
                self._spawn(name, celery + ["worker", "-Q", queues, "-c", str(self.worker_concurrency),
                                            "-n", f"{name}@%h", *WORKER_FLAGS, "-l", "info"])
        self._spawn("beat", celery + ["beat", "-l", "info"])
        if self.flower:
            self._spawn("flower", celery + ["flower", f"--port={self.ports['flower']}", "--address=127.0.0.1"])
        self._configure_sandboxes()
        threading.Thread(target=self._supervise, daemon=True).start()
        return self

    def max_db_connections(self) -> int:
        """max_connections for the stack's PostgreSQL, computed from what the stack runs.

        Every database user holds at most one connection per thread of work (a session at a time;
        each process's pool keeps only what it used at once): gunicorn's processes x threads, each
        Celery pool process (worker and loopworker per `workers`, `worker_concurrency` each; the
        parent processes run no task), beat, and this driving process (DRIVER_CONNECTIONS).
        For the chaos stack: 2 x 4 + 2 x 2 x 4 + 1 + 3 = 28 clients. Doubled, for processes killed
        and replaced while the server has not yet seen their connections close, plus the 3 slots
        PostgreSQL reserves for superusers by default: 59.
        """
        web = self.web_processes * self.web_threads
        tasks = self.workers * 2 * self.worker_concurrency
        beat = 1
        clients = web + tasks + beat + DRIVER_CONNECTIONS
        return 2 * clients + SUPERUSER_RESERVED

    def _start_database(self) -> None:
        """With `database="postgres"`: a throwaway cluster under the workdir, before any process."""
        if self.database not in DATABASES:
            raise ValueError(f"database must be one of {', '.join(DATABASES)}, not {self.database!r}")
        if self.database != "postgres":
            return
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL not found (pg_ctl on PATH or in /usr/lib/postgresql/*/bin; "
                               "Debian: apt-get install postgresql)")
        root, self._postgres_link = cluster_root(self.workdir)
        limited = self.db_connection_limit is not None
        # With a limit, the service's role gets exactly that many slots: PostgreSQL keeps the
        # reserved ones for superusers (the driver's samplers), as a hosted plan keeps its own.
        slots = (self.db_connection_limit + SUPERUSER_RESERVED if self.db_connection_limit is not None
                 else self.max_db_connections())
        self.postgres = PostgresCluster(bindir, root, max_connections=slots)
        self.postgres.start()
        self._database_url = self.postgres.create_database(POSTGRES_DATABASE,
                                                           owner=APP_ROLE if limited else None)

    def database_label(self) -> str:
        """Which database the stack runs on, for reports."""
        if self.postgres is None:
            return f"sqlite ({self.env.get('DATABASE_URL', '')})"
        return (f"postgres (PostgreSQL {self.postgres.version()}, port {self.postgres.port}, "
                f"max_connections {self.postgres.max_connections})")

    def valkey_args(self) -> list[str]:
        return ["--maxclients", str(self.redis_maxclients)] if self.redis_maxclients else []

    def _start_valkey(self) -> None:
        proc, self.redis_url = start_valkey(self.workdir / "valkey", self.ports["valkey"],
                                            extra_args=self.valkey_args())
        self.procs["valkey"] = proc
        if self.capture_broker:
            threading.Thread(target=self._capture_broker, daemon=True).start()

    def _capture_broker(self) -> None:
        """Write every command the broker receives to logs/broker.log (MONITOR)."""
        with open(self.workdir / "logs" / "broker.log", "a", encoding="utf-8", errors="replace") as out:
            while not self._stopping.is_set():
                try:
                    with redis.Redis.from_url(self.redis_url).monitor() as monitor:
                        for command in monitor.listen():
                            out.write(command["command"] + "\n")
                            out.flush()  # a scan right after the run must see every command
                except (redis.RedisError, OSError):
                    time.sleep(0.2)  # the broker is restarting

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATA_DIR": str(self.workdir),
            "DATABASE_URL": (self._database_url if self.postgres else
                             env.get("STACK_DATABASE_URL") or f"sqlite:///{self.workdir / 'integration.db'}"),
            "REDIS_URL": self.redis_url,
            "LOOP_BASE_URL": self.url("loop"),
            "RLM_BASE_URL": self.url("rlm"),
            "ADMIN_TOKEN": env.get("ADMIN_TOKEN") or "demo-admin-token",
            "LOOP_WEBHOOK_SECRET": env.get("LOOP_WEBHOOK_SECRET") or "demo-webhook-secret",
            "REDBEAT_KEY_PREFIX": f"redbeat-{uuid.uuid4().hex[:8]}",
            "PYTHONUNBUFFERED": "1",
        })
        if self.fast:
            for key, value in FAST_ENV.items():
                env.setdefault(key, value)
        env.update(self.extra_env)
        return env

    def _init_database(self) -> None:
        # Like the release phase: migrate once, before any process uses the database.
        from integration.store.schema import migrate

        migrate(self.env["DATABASE_URL"])

    def _spawn(self, name: str, args: list[str]) -> None:
        self.commands[name] = args
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=ROOT, start_new_session=True)
        log.close()  # the child holds its own copy

    def _wait_serving(self, name: str, path: str) -> None:
        """Wait for a process to answer; if it exits first, say why with the end of its log."""
        try:
            wait_http(f"{self.url(name)}{path}", self.procs[name])
        except RuntimeError as exc:
            log = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")
            tail = "\n".join(log.splitlines()[-15:])
            raise RuntimeError(f"{name} did not start: {exc}\n--- end of {name}.log ---\n{tail}") from exc

    def _configure_sandboxes(self) -> None:
        if self.fast:
            requests.post(f"{self.url('loop')}/_sim/config", timeout=5,
                          json={"process_delay_s": 1.0, "webhook_retry_base_s": 0.5}).raise_for_status()
        loop = LoopClient(self.url("loop"), self.env.get("LOOP_API_KEY", "demo-loop-key"))
        loop.ensure_webhooks(f"{self.url('web')}/webhooks/loop/demo", WEBHOOK_TRIGGERS)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['ADMIN_TOKEN']}"}

    # --- supervising and failures ------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            for name, proc in list(self.procs.items()):
                if name in self.commands and name not in self._paused and proc.poll() is not None:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self._spawn(name, self.commands[name])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process (the supervisor brings it back, as a platform would)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def worker_children(self, name: str) -> list[int]:
        """Pool processes of a Celery worker: the ones that run tasks."""
        parent = self.procs[name].pid
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def restart(self, name: str, down_s: float = 0.0) -> None:
        """Stop a process gracefully and start it again after `down_s` seconds."""
        self._paused.add(name)
        try:
            self.stop_process(name)
            time.sleep(down_s)
            self._spawn(name, self.commands[name])
            if name == "web":
                wait_http(f"{self.url('web')}/healthz", self.procs["web"])
        finally:
            self._paused.discard(name)

    def restart_broker(self, down_s: float = 2.0) -> None:
        """Stop the Redis-compatible server (it writes its append-only file) and start it again."""
        proc = self.procs["valkey"]
        proc.terminate()
        proc.wait(timeout=15)
        time.sleep(down_s)
        self.procs["valkey"], _ = start_valkey(self.workdir / "valkey", self.ports["valkey"],
                                               extra_args=self.valkey_args())

    # --- stopping ----------------------------------------------------------------------------
    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 25.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        self._stopping.set()
        try:
            for name in reversed(list(self.procs)):
                if name != "valkey":
                    self.stop_process(name)
            valkey = self.procs.get("valkey")
            if valkey is not None and valkey.poll() is None:
                valkey.terminate()
                valkey.wait(timeout=10)
        finally:  # whatever happened above (an error, a second Ctrl-C), the cluster goes
            self._stop_database()

    def _stop_database(self) -> None:
        url = self.env.get("DATABASE_URL")
        if url:
            db.dispose_engines(url)  # this process's pool (migrations, checks)
        if self.postgres is not None:
            cluster, self.postgres = self.postgres, None
            logs = self.workdir / "logs"
            try:
                cluster.stop(keep_log=logs / "postgres.log" if logs.is_dir() else None)
            finally:
                if self._postgres_link is not None:
                    self._postgres_link.unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    wait_until(lambda: requests.get(url, timeout=1).status_code < 500, requests.RequestException,
               proc=proc, timeout=timeout, what=url)
