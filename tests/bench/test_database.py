"""bench/database.py: the URLs each benchmark's databases get, on SQLite and on PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bench.database import Databases, explain
from integration.store.db import get_engine
from integration.store.models import create_all

PLAN_SQL = "SELECT id FROM returns WHERE merchant = 'demo' AND rma_number = 3100"


def test_sqlite_databases_are_files_in_the_workdir(tmp_path):
    with Databases("sqlite", tmp_path) as dbs:
        url = dbs.new("open-1000")
        assert url == f"sqlite:///{tmp_path / 'open-1000.db'}"
        create_all(get_engine(url))
        assert "ix_returns_merchant_rma_number" in explain(url, PLAN_SQL)
        assert dbs.server_cpu_s() == 0.0
        dbs.drop(url)
        assert not Path(url.split("///", 1)[1]).exists()


def test_postgres_databases_are_fresh_ones_on_the_cluster(postgres, tmp_path):
    with Databases("postgres", tmp_path, cluster=postgres) as dbs:
        url = dbs.new("open-1000")
        assert url == postgres.url("open_1000")  # a name PostgreSQL takes unquoted
        create_all(get_engine(url))
        dbs.analyze(url)
        assert explain(url, PLAN_SQL).startswith("Seq Scan on returns; Filter:")  # an empty table: EXPLAIN, one line
        assert dbs.server_cpu_s() > 0
        assert dbs.label().startswith("PostgreSQL ")
        dbs.drop(url)
        with postgres._admin.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = 'open_1000'")).scalar() == 0
    assert postgres._admin is not None  # a cluster passed in is not stopped


def test_an_unknown_database_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sqlite, postgres"):
        Databases("mysql", tmp_path)
