"""The operator list's cost at 100,000 returns in SQLite, without and with its indexes.

`nice -n 15 .venv/bin/python -m bench.ops_list [--returns 100000] [--postgres]`: prints one line
per query (best of 9, milliseconds). `--postgres` measures a throwaway PostgreSQL cluster
(stack/postgres.py) instead. Not part of `make bench`: a measurement, not a target.

The data: three merchants (70 %, 29 %, 1 % of returns), 85 % complete, 1.5 % parked with a
handful of reasons, updated over 90 days. "Deep" pages start from the cursor of the 20,000th
row of their list (page 400 at 50 a page).
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from integration.ops.queries import Cursor, list_returns, return_filters
from integration.store.db import get_engine, session_factory
from integration.store.models import Return, create_all, func

MERCHANTS = (("big", 0.70), ("mid", 0.29), ("small", 0.01))
STATES = (("complete", 0.85), ("cancelled", 0.03), ("transmitted", 0.08), ("decided", 0.015),
          ("loop_actioned", 0.01), ("needs_attention", 0.015))
REASONS = ("SKU unknown to RLM: X{n} (barcode none); no RMA created. Fix the catalog or SKU "
           "mapping, then retry.", "RLM refused RA {n}: RA is closed",
           "outcome of the process call unknown: Loop still shows the return open 6 h after it "
           "was sent", "RLM answered 500: internal error")
# The index migration 0005 adds (ix_returns_updated_at, on updated_at alone, is there in both).
BEFORE: dict[str, str] = {}
AFTER = {"ix_returns_merchant_updated_at_id": "merchant, updated_at, id"}
REPEATS = 9


def _pick(rng: random.Random, weighted) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def fill(url: str, count: int) -> None:
    rng, now = random.Random(7), datetime.now(UTC)
    rows = []
    for n in range(count):
        state = _pick(rng, STATES)
        rows.append({
            "merchant": _pick(rng, MERCHANTS), "loop_return_id": str(50_000_000 + n), "state": state,
            "units": [], "rma_lines": [], "step_attempts": 0, "version": 1, "rma_number": 100_000 + n,
            "attention_step": "create_rma" if state == "needs_attention" else None,
            "attention_reason": rng.choice(REASONS).format(n=n) if state == "needs_attention" else None,
            "created_at": now, "updated_at": now - timedelta(seconds=rng.uniform(0, 90 * 86400)),
        })
    with get_engine(url).begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(Return), rows[i:i + 5000])


def queries(sessions) -> dict[str, Callable[[], object]]:
    def deep(**filters) -> Cursor:
        with sessions() as s:
            row = s.execute(select(Return.updated_at, Return.id).where(*return_filters(**filters))
                            .order_by(Return.updated_at.desc(), Return.id.desc())
                            .offset(19_999).limit(1)).one()
        return Cursor(row.updated_at, row.id)

    def page(**kw) -> Callable[[], object]:
        def run() -> object:
            with sessions() as s:
                return list_returns(s, **kw)
        return run

    def counts(**filters) -> Callable[[], object]:
        def run() -> object:
            with sessions() as s:
                return s.execute(select(Return.state, func.count()).where(*return_filters(**filters))
                                 .group_by(Return.state)).all()
        return run

    def offset_page(**filters) -> Callable[[], object]:
        def run() -> object:  # how the pages paged before: OFFSET, page 400
            with sessions() as s:
                return s.scalars(select(Return).where(*return_filters(**filters))
                                 .order_by(Return.updated_at.desc(), Return.id.desc())
                                 .offset(19_950).limit(50)).all()
        return run

    week = datetime.now(UTC) - timedelta(days=7)
    return {
        "all, first page": page(),
        "all, page 400": page(after=deep()),
        "merchant big, first page": page(merchant="big"),
        "merchant big, page 400": page(merchant="big", after=deep(merchant="big")),
        "(OFFSET paging) all, page 400": offset_page(),
        "(OFFSET paging) merchant big, page 400": offset_page(merchant="big"),
        "merchant small (1 %), first page": page(merchant="small"),
        "state needs_attention": page(state="needs_attention"),
        "merchant small + needs_attention": page(merchant="small", state="needs_attention"),
        "merchant big + complete, page 400": page(merchant="big", state="complete",
                                                  after=deep(merchant="big", state="complete")),
        "reason 'sku unknown'": page(reason="sku unknown"),
        "since 7 days, merchant small": page(merchant="small", since=week),
        "the page's state counts, all": counts(),
        "the page's state counts, merchant small": counts(merchant="small"),
    }


def timed(run: Callable[[], object], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ops_list", description=__doc__)
    parser.add_argument("--returns", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        url = f"sqlite:///{Path(tmp) / 'list.db'}"
        if args.postgres:
            from stack.postgres import PostgresCluster, find_bindir

            bindir = find_bindir()
            if bindir is None:
                raise SystemExit("no PostgreSQL server here (pg_ctl)")
            # A directory of its own: under root the cluster hands it to the postgres user.
            root = Path(tempfile.mkdtemp(prefix="rlm-loop-bench-pg-"))
            cluster = stack.enter_context(PostgresCluster(bindir, root))
            url = cluster.create_database("bench")
        create_all(get_engine(url))
        fill(url, args.returns)
        engine, sessions = get_engine(url), session_factory(url)
        results: dict[str, list[float]] = {}
        for indexes in (BEFORE, AFTER):
            with engine.begin() as conn:
                for name in (*BEFORE, *AFTER):
                    conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
                for name, columns in indexes.items():
                    conn.execute(text(f"CREATE INDEX {name} ON returns ({columns})"))
                if args.postgres:
                    conn.execute(text("ANALYZE returns"))  # as autovacuum would have by then
            for name, run in queries(sessions).items():
                results.setdefault(name, []).append(timed(run))
        print(f"{args.returns:,} returns, {'PostgreSQL' if args.postgres else 'SQLite'}; best of "
              f"{REPEATS}, ms: without / with {', '.join(AFTER)}")
        for name, (without, with_) in results.items():
            print(f"  {name:<40} {without:8.2f}  {with_:8.2f}")


if __name__ == "__main__":
    main()
