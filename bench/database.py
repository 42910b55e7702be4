"""Where a benchmark's databases live: SQLite files (the default) or a throwaway PostgreSQL cluster.

`python -m bench --db postgres` starts, per benchmark, a cluster the way the stack and the tests
do (stack/postgres.py: initdb in a temporary directory, fsync off) and creates a fresh database
for each size it measures, dropped when that size is done. The benchmarks that run the real
stack pass the same choice to `Stack(database=...)` instead.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import text

from integration.store.db import dispose_engines, get_engine
from stack.postgres import PostgresCluster, find_bindir

from .common import children

DATABASES = ("sqlite", "postgres")
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


class Databases:
    """Fresh databases of one kind for one benchmark: `new(name)` gives a URL, `drop(url)` ends it.

    On PostgreSQL the cluster is started on `__enter__` (unless one is passed in) and removed on
    `__exit__` with every database in it."""

    def __init__(self, kind: str, workdir: Path, cluster: PostgresCluster | None = None):
        if kind not in DATABASES:
            raise ValueError(f"database must be one of {', '.join(DATABASES)}, not {kind!r}")
        self.kind, self.workdir, self.cluster = kind, Path(workdir), cluster
        self._own_cluster = False

    def __enter__(self) -> Databases:
        if self.kind == "postgres" and self.cluster is None:
            bindir = find_bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL not found (pg_ctl on PATH or in /usr/lib/postgresql/*/bin; "
                                   "Debian: apt-get install postgresql)")
            # A directory of its own: under root the cluster hands it to the postgres user, who must
            # be able to get to it (bench/__main__.py leaves the run's directory searchable).
            root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
            self.cluster = PostgresCluster(bindir, root)
            self._own_cluster = True
            try:
                self.cluster.start()
            except BaseException:
                self.cluster.stop()
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self._own_cluster and self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def new(self, name: str) -> str:
        """The URL of an empty database called `name` (no schema yet)."""
        if self.kind == "sqlite":
            self.workdir.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{self.workdir / f'{name}.db'}"
        assert self.cluster is not None, "use Databases as a context manager"
        return self.cluster.create_database(name.replace("-", "_"))

    def drop(self, url: str) -> None:
        """Close this process's connections to `url` and delete the database."""
        dispose_engines(url)
        if self.kind == "sqlite":
            path = url.split("///", 1)[1]
            for suffix in ("", "-wal", "-shm", ".inbox-lock"):
                Path(path + suffix).unlink(missing_ok=True)
            return
        assert self.cluster is not None and self.cluster._admin is not None
        name = url.rsplit("/", 1)[1]
        with self.cluster._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def analyze(self, url: str) -> None:
        """On PostgreSQL, table statistics as autovacuum gathers them after a bulk load (so the
        plans do not depend on when it ran); SQLite is measured without ANALYZE, as the service
        runs it."""
        if self.kind == "postgres":
            with get_engine(url).connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()

    def server_cpu_s(self) -> float:
        """CPU time used so far by the PostgreSQL server (the postmaster, its backends and
        background processes); 0 on SQLite, which works inside the benchmark's own process."""
        if self.kind == "sqlite" or self.cluster is None:
            return 0.0
        try:
            pid = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        return sum(_run_ns(p) for p in [pid, *children(pid)]) / 1e9


    def label(self) -> str:
        """How the report names this database."""
        if self.kind == "sqlite":
            return "SQLite (WAL), a file in a temporary directory"
        assert self.cluster is not None
        return f"PostgreSQL {self.cluster.version()}, a throwaway local cluster (fsync off)"


def _run_ns(pid: int) -> int:
    """Nanoseconds a process has run on a CPU (/proc/<pid>/schedstat): finer than the 10 ms
    ticks of /proc/<pid>/stat, which a sweep of a few milliseconds would round to nothing. Only
    live processes count: the benchmarks' connections are pooled, so their backends stay."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def explain(url: str, sql: str, params: dict | None = None) -> str:
    """The database's plan for `sql`, on one line: SQLite's EXPLAIN QUERY PLAN, or PostgreSQL's
    EXPLAIN (costs left out, so the text is the plan's shape)."""
    engine = get_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        rows = conn.execute(text(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (COSTS OFF) ") + sql),
                            params or {}).all()
    return "; ".join(str(row[-1]).strip() for row in rows)


def plan_label(kind: str) -> str:
    """Whose plans these are, for the report."""
    return f"{LABELS[kind]}'s"
