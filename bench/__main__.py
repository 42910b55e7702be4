"""`python -m bench [--only receiver,polling,sweeper,memory,pipeline,fairness,latency] [--db sqlite|postgres] [--out docs/benchmarks.md]`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from . import figures
from .common import ROOT, Result, machine
from .database import DATABASES
from .report import render, table

BENCHMARKS = ("receiver", "polling", "sweeper", "memory", "pipeline", "fairness", "latency")


def _run(name: str, args) -> Result:
    progress = lambda text: print(text, flush=True)  # noqa: E731
    if name == "receiver":
        from . import receiver

        return receiver.main(quick=args.quick, db=args.db)
    if name == "polling":
        from . import polling

        sizes = (1_000, 10_000) if args.quick else polling.SIZES
        return polling.main(sizes, progress=progress, db=args.db)
    if name == "sweeper":
        from . import sweeper

        return sweeper.main((1_000, 10_000) if args.quick else sweeper.SIZES, progress=progress, db=args.db)
    if name == "memory":
        from . import memory

        return memory.main(phase_s=10 if args.quick else memory.PHASE_S, progress=progress, db=args.db)
    if name == "pipeline":
        from . import pipeline

        returns = args.returns or (200 if args.quick else 600)
        return pipeline.main(returns, args.limit, args.concurrency, progress=progress, db=args.db)
    if name == "fairness":
        from . import fairness

        return fairness.main(args.fairness_burst, args.fairness_rate, quick=args.quick, progress=progress,
                             db=args.db)
    if name == "latency":
        from . import latency

        return latency.main(args.latency_rate, args.latency_cycles, args.latency_interval, quick=args.quick,
                            progress=progress, db=args.db)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="where to write the report (markdown); '-' for none")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--db", choices=DATABASES, default="sqlite",
                        help="the database every benchmark runs on (postgres: a throwaway local cluster)")
    parser.add_argument("--returns", type=int, help="pipeline: how many returns (600; 200 with --quick)")
    parser.add_argument("--limit", type=int, default=300,
                        help="pipeline: Loop's requests/min per key in the sandbox (300 is Loop's real limit)")
    parser.add_argument("--concurrency", type=int, default=12, help="pipeline: processes per Celery worker")
    parser.add_argument("--fairness-burst", type=int, default=5000,
                        help="fairness: how many returns the bursting merchant decides")
    parser.add_argument("--fairness-rate", type=float, default=100.0,
                        help="fairness: the burst's decisions a second (0: all published at once)")
    parser.add_argument("--latency-rate", type=float, default=1.0,
                        help="latency: receipts a second the warehouse records")
    parser.add_argument("--latency-cycles", type=float, default=2.0,
                        help="latency: how many poll intervals the flow of receipts lasts (1 with --quick)")
    parser.add_argument("--latency-interval", type=float,
                        help="latency: the receipt poll interval in seconds (default: the service's default)")
    parser.add_argument("--quick", action="store_true", help="shorter runs and smaller sizes (a smoke test)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the runs' working directories (databases, logs) instead of deleting them")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    # Every benchmark's temporary directory goes under one per run, removed at the end.
    run_dir = tempfile.mkdtemp(prefix="bench-run-")
    os.chmod(run_dir, 0o711)  # under root, PostgreSQL's own user must get through to its cluster
    tempfile.tempdir = run_dir
    started_at = datetime.now(UTC)
    started = time.monotonic()
    host = machine()
    command = "make bench" + (f" ARGS=\"{' '.join(sys.argv[1:])}\"" if sys.argv[1:] else "")
    print(f"{command} on {host['cpus']} CPUs ({host['cpu_model']}), load average {host['load_avg']}", flush=True)
    results: list[Result] = []
    for name in chosen:
        print(f"\n== {name}", flush=True)
        t0 = time.monotonic()
        try:
            result = _run(name, args)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            result = Result(name, error=f"{type(exc).__name__}: {exc}")
        result.elapsed_s = time.monotonic() - t0
        result.run = {"command": command, "date": started_at.strftime("%Y-%m-%d %H:%M UTC"), "host": host}
        results.append(result)
        print(f"   ({result.elapsed_s:.0f} s)", flush=True)
    elapsed = time.monotonic() - started

    # Run in the order above (the long pipeline last); report in the order.
    order = ("receiver", "pipeline", "polling", "sweeper", "memory", "fairness", "latency")
    results = [r for _, r in sorted(zip(chosen, results, strict=True), key=lambda nr: order.index(nr[0]))]
    print()
    print(table(results), flush=True)
    for r in results:
        for note in r.notes:
            print(f"- {note}")
        if r.error:
            print(f"- {r.name} FAILED: {r.error}")
    print(f"\ntotal {elapsed / 60:.1f} min", flush=True)

    if args.out != "-":
        for r in results:
            r.run.update(minutes=elapsed / 60, load_after=machine()["load_avg"])
        # This database's figures replace its own earlier ones; the other database's are kept.
        everything = figures.record(Path(args.out), args.db, results)
        Path(args.out).write_text(render(everything))
        print(f"written to {args.out} and {figures.figures_path(Path(args.out), args.db)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"name": r.name, "rows": [vars(row) for row in r.rows], "details": r.details, "notes": r.notes,
              "error": r.error, "elapsed_s": r.elapsed_s, "extra": r.extra} for r in results],
            indent=2, default=str))
    tempfile.tempdir = None
    if args.keep:
        print(f"working directories kept under {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
