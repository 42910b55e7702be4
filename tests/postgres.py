"""The throwaway PostgreSQL cluster (stack/postgres.py) for the database tests.

One cluster for the session in a temporary directory, an emptied database for each test,
everything removed at the end of the session.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from integration.store import db
from integration.store.models import Base
from stack.postgres import PostgresCluster as _Cluster
from tests.system import postgres_bindir

TEST_DATABASE = "tests"


@dataclass
class PostgresCluster(_Cluster):
    """The stack's cluster plus the `tests` database, emptied before each test."""
    _tests: Engine | None = None

    def start(self) -> PostgresCluster:
        super().start()
        self.create_database(TEST_DATABASE)
        self._tests = create_engine(self.url(TEST_DATABASE), isolation_level="AUTOCOMMIT")
        return self

    def stop(self, keep_log: Path | None = None) -> None:
        if self._tests is not None:
            self._tests.dispose()
        super().stop(keep_log)

    def empty_database(self) -> str:
        """The test database, as good as new: every row deleted, every id counter restarted.

        Emptying one database costs 0.05 s against 0.15-0.25 s for a new database or schema per
        test. If a test left other tables behind, the schema is recreated instead.
        """
        url = self.url(TEST_DATABASE)
        db.dispose_engines(url)  # the app caches an engine per URL: close its pool
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


@pytest.fixture(scope="session")
def postgres():
    bindir = postgres_bindir()  # or the test is skipped (fails under CI=true)
    cluster = PostgresCluster(bindir, Path(tempfile.mkdtemp(prefix="rlm-loop-pg-")), max_connections=200)
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
