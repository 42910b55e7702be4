"""A throwaway PostgreSQL cluster for the database tests (Debian's `postgresql` package).

initdb into a temporary directory, start on a free port with the socket in that directory, an
emptied database for each test, everything removed at the end of the session. PostgreSQL
refuses to run as root, so under root (CI) the cluster is run by the `postgres` user.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from integration import db
from integration.embedded_redis import free_port
from integration.models import Base

SUPERUSER = "postgres"
TEST_DATABASE = "tests"
# A test cluster: durability is worth nothing here, speed is.
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"


def find_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin."""
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)
    _admin: Engine | None = None
    _tests: Engine | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        # Root may not run the server: hand the commands to the user who owns the directory.
        as_owner = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        done = subprocess.run(as_owner + [str(self.bindir / args[0]), *args[1:]], cwd=self.root,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> "PostgresCluster":
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {FAST}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w",
                  "-o", options, "start")
        self._admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        self.create_database(TEST_DATABASE)
        self._tests = create_engine(self.url(TEST_DATABASE), isolation_level="AUTOCOMMIT")
        return self

    def stop(self) -> None:
        for engine in (self._admin, self._tests):
            if engine is not None:
                engine.dispose()
        try:
            if (self.data / "postmaster.pid").exists():  # running (or failed half-way through start)
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def empty_database(self) -> str:
        """The test database, as good as new: every row deleted, every id counter restarted.

        Emptying one database costs 0.05 s against 0.15-0.25 s for a new database or schema per
        test. If a test left other tables behind, the schema is recreated instead.
        """
        url = self.url(TEST_DATABASE)
        engine = db._engines.pop(url, None)  # the app caches an engine per URL: close its pool
        if engine is not None:
            engine.dispose()
        with self._tests.connect() as conn:
            # A connection a test left open could hold locks that block the DELETEs.
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            tables = set(conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
            if not tables <= set(Base.metadata.tables):
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
                return url
            for table in reversed(Base.metadata.sorted_tables):  # children before parents
                if table.name in tables:
                    conn.execute(table.delete())
            for sequence in conn.execute(text(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")).scalars().all():
                conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        return url

    def create_database(self, name: str) -> str:
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url(name)


@pytest.fixture(scope="session")
def postgres():
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    cluster = PostgresCluster(bindir, Path(tempfile.mkdtemp(prefix="rlm-loop-pg-")))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres):
    """An empty database for one test, so tests stay independent."""
    return postgres.empty_database()
