"""Each database's figures, kept beside the report: docs/benchmarks-sqlite.json and -postgres.json.

A run replaces, in its own database's file, the benchmarks it ran and keeps the others (an
`--only sweeper` run leaves the receiver's figures alone); the other database's file is not
touched. docs/benchmarks.md is then written from both files, so `make bench` and `make bench
ARGS="--db postgres"` never erase each other's figures. Every benchmark keeps the command, date
and machine of the run that measured it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .common import Result, Row
from .database import DATABASES

# The order, the report's.
ORDER = ("Receiver throughput", "Pipeline throughput under Loop's limit", "Polling cost", "Sweeper cost", "Memory",
         "Merchant fairness", "Receipt → Loop action latency")


def figures_path(report: Path, db: str) -> Path:
    """Where `db`'s figures live for the report at `report`: docs/benchmarks.md -> docs/benchmarks-sqlite.json."""
    return report.with_name(f"{report.stem}-{db}.json")


def to_dict(result: Result) -> dict:
    return {"name": result.name, "rows": [vars(row) for row in result.rows], "details": result.details,
            "notes": result.notes, "error": result.error, "elapsed_s": result.elapsed_s, "extra": result.extra,
            "run": result.run}


def from_dict(data: dict) -> Result:
    return Result(name=data["name"], rows=[Row(**row) for row in data.get("rows", [])],
                  details=list(data.get("details", [])), notes=list(data.get("notes", [])),
                  elapsed_s=data.get("elapsed_s", 0.0), error=data.get("error"), extra=data.get("extra") or {},
                  run=data.get("run") or {})


def _order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


# `python -m bench` names a benchmark that failed by its short name.
SHORT = dict(zip(("receiver", "pipeline", "polling", "sweeper", "memory", "fairness", "latency"), ORDER, strict=True))


def merge(stored: list[Result], new: list[Result]) -> list[Result]:
    """`stored` with every benchmark `new` ran replaced by its new figures, in the report's order.

    A benchmark that failed this time keeps the figures it had, with a note of the failure."""
    by_name = {SHORT.get(r.name, r.name): r for r in stored}
    for r in new:
        r.name = SHORT.get(r.name, r.name)
        before = by_name.get(r.name)
        if r.error and before is not None and not before.error:
            before.notes = [n for n in before.notes if not n.startswith(FAILED_LATER)] + [
                f"{FAILED_LATER} (`{r.run.get('command')}`, {r.run.get('date')}): {r.error}; "
                "these figures are from the run before."]
            continue
        by_name[r.name] = r
    return sorted(by_name.values(), key=lambda r: _order(r.name))


FAILED_LATER = "A later run of this benchmark failed"


def load(path: Path) -> list[Result]:
    if not path.exists():
        return []
    return [from_dict(d) for d in json.loads(path.read_text())["results"]]


def _clean(value):
    """JSON without NaN (not JSON) and with whatever else as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def save(path: Path, db: str, results: list[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean({"database": db, "results": [to_dict(r) for r in results]}),
                               indent=1, ensure_ascii=False) + "\n")


def record(report: Path, db: str, new: list[Result]) -> dict[str, list[Result]]:
    """Merge this run's results into `db`'s figures beside `report`, save them, and return every
    database's figures (those with any), for the report."""
    path = figures_path(report, db)
    save(path, db, merge(load(path), new))
    return {kind: found for kind in DATABASES if (found := load(figures_path(report, kind)))}
