"""Start and stop the real processes: Valkey, both sandboxes, gunicorn, Celery worker and beat.

Every process logs to `<workdir>/logs/<name>.log`, so a run can be inspected (and scanned for
personal data) afterwards.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from integration.embedded_redis import free_port, start_valkey
from integration.loop_client import LoopClient

FIXED_PORTS = {"web": 8000, "loop": 8001, "rlm": 8002, "flower": 5555}
WEBHOOK_TRIGGERS = {
    "return": ["return.created", "return.updated", "return.closed"],
    "return.processing": ["return.processing.failed"],
}

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
}


@dataclass
class Stack:
    workdir: Path
    fixed_ports: bool = False
    fast: bool = True
    worker_concurrency: int = 4
    workers: int = 1
    flower: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    redis_url: str = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        for name in ("web", "loop", "rlm", "flower"):
            self.ports[name] = FIXED_PORTS[name] if self.fixed_ports else free_port()
        valkey, self.redis_url = start_valkey(self.workdir / "valkey")
        self.procs["valkey"] = valkey
        self.env = self._environment()
        self._init_database()
        self._spawn("loop", [sys.executable, "-m", "sandbox.loop", "--port", str(self.ports["loop"])])
        self._spawn("rlm", [sys.executable, "-m", "sandbox.rlm", "--port", str(self.ports["rlm"])])
        self._spawn("web", [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{self.ports['web']}",
                            "-w", "2", "--threads", "4", "--access-logfile", "-", "web:create_app()"])
        for name in ("loop", "rlm"):
            wait_http(f"{self.url(name)}/_sim/clock", self.procs[name])
        wait_http(f"{self.url('web')}/healthz", self.procs["web"])
        # Queues split by system: tasks waiting for a Loop rate-limit slot must never starve
        # the RLM polling and the decisions.
        for n in range(self.workers):
            for role, queues in (("worker", "default,erp"), ("loopworker", "loop")):
                name = f"{role}{n + 1}"
                self._spawn(name, [sys.executable, "-m", "celery", "-A", "workers.celery_app",
                                   "worker", "-Q", queues, "-c", str(self.worker_concurrency),
                                   "-n", f"{name}@%h", "-l", "info"])
        self._spawn("beat", [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat",
                             "-l", "info"])
        if self.flower:
            self._spawn("flower", [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower",
                                   f"--port={self.ports['flower']}", "--address=127.0.0.1"])
        self._configure_sandboxes()
        return self

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATA_DIR": str(self.workdir),
            "DATABASE_URL": f"sqlite:///{self.workdir / 'integration.db'}",
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
        # Like a release phase: create the schema once, before any process uses it.
        from integration.db import get_engine
        from integration.models import create_all

        create_all(get_engine(self.env["DATABASE_URL"]))

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=Path(__file__).resolve().parent.parent,
                                            start_new_session=True)

    def _configure_sandboxes(self) -> None:
        if self.fast:
            requests.post(f"{self.url('loop')}/_sim/config", timeout=5,
                          json={"process_delay_s": 1.0, "webhook_retry_base_s": 0.5}).raise_for_status()
        loop = LoopClient(self.url("loop"), self.env.get("LOOP_API_KEY", "demo-loop-key"))
        loop.ensure_webhooks(f"{self.url('web')}/webhooks/loop/demo", WEBHOOK_TRIGGERS)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['ADMIN_TOKEN']}"}

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
        for name in reversed(list(self.procs)):
            if name == "valkey":
                continue
            self.stop_process(name)
        valkey = self.procs.get("valkey")
        if valkey is not None and valkey.poll() is None:
            valkey.terminate()
            valkey.wait(timeout=10)

    def __enter__(self) -> "Stack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)
