"""A throwaway PostgreSQL cluster (Debian's `postgresql` package): for local stacks and tests.

initdb into a directory, start on a free port with the socket in that directory, everything
removed on stop. PostgreSQL refuses to run as root, so under root (CI) the cluster is run by the
`postgres` user. Durability is worth nothing here and speed is: fsync and friends are off.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from integration.infra.embedded_redis import free_port

SUPERUSER = "postgres"
# A throwaway cluster: durability is worth nothing here, speed is.
FAST_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")


def find_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin."""
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _as_owner() -> list[str]:
    # Root may not run the server: hand the commands to the user who owns the directory.
    return ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []


def reachable_by_server(path: Path) -> bool:
    """Whether the user that runs the server can get to `path` (every parent searchable)."""
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_owner() + ["test", "-x", str(path)], capture_output=True).returncode == 0


SUPERUSER_RESERVED = 3  # PostgreSQL's default superuser_reserved_connections


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)
    max_connections: int = 200
    superuser_reserved_connections: int = SUPERUSER_RESERVED
    _admin: Engine | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> str:
        done = subprocess.run(_as_owner() + [str(self.bindir / args[0]), *args[1:]], cwd=self.root,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> PostgresCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {FAST_OPTIONS} "
                   f"-c max_connections={self.max_connections} "
                   f"-c superuser_reserved_connections={self.superuser_reserved_connections}")
        # pg_ctl starts the server in a session of its own: a Ctrl-C in the terminal reaches us,
        # and we stop it, rather than the server directly.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-o", options, "start")
        self._admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        return self

    def stop(self, keep_log: Path | None = None) -> None:
        """Stop the server (if it runs) and remove the cluster; copy its log to `keep_log` first."""
        if self._admin is not None:
            self._admin.dispose()
        try:
            if (self.data / "postmaster.pid").exists():  # running (or failed half-way through start)
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            if keep_log is not None and self.log_path.exists():
                try:
                    shutil.copyfile(self.log_path, keep_log)
                except OSError:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str, owner: str | None = None) -> str:
        """A database; with `owner`, also that role (a login without superuser rights, as a
        hosted plan's), which owns the database and is who the URL returned connects as."""
        with self._admin.connect() as conn:
            if owner:
                conn.execute(text(f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER'))
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else "")))
        return self.url(name, owner or SUPERUSER)

    def version(self) -> str:
        with self._admin.connect() as conn:
            return conn.execute(text("SHOW server_version")).scalar()

    def connections(self) -> int:
        """Client connections open right now (this query's own included)."""
        with self._admin.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE backend_type = 'client backend'")).scalar()

    def connections_by_application(self, user: str) -> dict[str, int]:
        """`user`'s open connections by application_name (the service names each process)."""
        with self._admin.connect() as conn:
            rows = conn.execute(text("SELECT application_name, count(*) FROM pg_stat_activity "
                                     "WHERE backend_type = 'client backend' AND usename = :u "
                                     "GROUP BY application_name"), {"u": user}).all()
        return {name or "(unnamed)": n for name, n in rows}

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def cluster_root(workdir: Path) -> tuple[Path, Path | None]:
    """Where a stack's cluster lives: `<workdir>/postgres`, so it goes with the stack.

    Under root the server runs as `postgres`, which cannot get into a private (0700) workdir such
    as pytest's or mkdtemp's; the cluster then goes into a temporary directory of its own, with
    `<workdir>/postgres` a symlink to it. Returns (the cluster's root, the symlink or None).
    """
    inside = workdir / "postgres"
    if reachable_by_server(workdir):
        return inside, None
    root = Path(tempfile.mkdtemp(prefix="rlm-loop-pg-"))
    if inside.is_symlink():  # left by a run that could not clean up
        inside.unlink()
    inside.symlink_to(root, target_is_directory=True)
    return root, inside
