"""The summary table and docs/benchmarks.md."""
from __future__ import annotations

import re

from .common import Result, Row
from .database import DATABASES, LABELS
from .figures import ORDER
from .phases import BASELINE, PARSE, RELAY, SEND_TASK, STORE, WHOLE

MARK = {True: "met", False: "**missed**", None: "-"}


def _rows(results: list[Result]) -> list[Row]:
    rows = []
    for r in results:
        rows += r.rows
        if r.error:
            rows.append(Row(r.name, "did not run", "", "", "", False))
    return rows


def table(results: list[Result]) -> str:
    """Plain text, for the terminal."""
    head = ("Benchmark", "Measured", "Baseline / bound", "Ratio", "Target", "")
    rows = [head] + [(r.benchmark, r.measured, r.baseline, r.ratio, r.target,
                      {True: "MET", False: "MISSED", None: ""}[r.met]) for r in _rows(results)]
    widths = [min(60, max(len(str(row[i])) for row in rows)) for i in range(len(head))]
    return "\n".join("  ".join(str(c)[:60].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def markdown_table(results: list[Result]) -> list[str]:
    lines = ["| Benchmark | Measured | Baseline / bound | Ratio | Target | |", "|---|---|---|---|---|---|"]
    for r in _rows(results):
        lines.append(f"| {r.benchmark} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} | {MARK[r.met]} |")
    return lines


def _runs(results: list[Result]) -> list[str]:
    """One line per run that measured some of these results: command, date, machine, load."""
    runs: dict[tuple, list[Result]] = {}
    for r in results:
        key = tuple((k, str(v)) for k, v in sorted(r.run.items()) if k != "elapsed_s")
        runs.setdefault(key, []).append(r)
    out = []
    for group in runs.values():
        run = group[0].run
        if not run:
            out.append(f"  - {', '.join(r.name for r in group)}: (no record of the run)")
            continue
        host = run.get("host", {})
        out.append(
            f"  - {', '.join(r.name for r in group)}: `{run.get('command')}`, {run.get('date')}"
            + (f", {run['minutes']:.1f} minutes" if run.get("minutes") is not None else "")
            + f"; {host.get('cpus')} CPUs ({host.get('cpu_model')}), {host.get('memory')} RAM, {host.get('os')}, "
            f"Python {host.get('python')}; load average (1/5/15 min) {host.get('load_avg')} at the start, "
            f"{run.get('load_after')} at the end"
            + (f" (carried over from {run['source']})" if run.get("source") else ""))
    return out


_SIZE = re.compile(r" at ([\d,]+)")


def _size(label: str) -> int:
    found = _SIZE.search(label)
    return int(found.group(1).replace(",", "")) if found else 0


def side_by_side(by_db: dict[str, list[Result]]) -> list[str]:
    """The summary: one line per figure, each database's measurement beside the other's."""
    dbs = list(by_db)
    rows: dict[str, dict[str, Row]] = {}
    for db in dbs:
        for row in _rows(by_db[db]):
            rows.setdefault(row.benchmark, {})[db] = row
    # By benchmark, then figure, then size: a quick run's 10,000 sits beside a full run's 100,000.
    shapes = list(dict.fromkeys(_SIZE.sub(" at N", label) for label in rows))
    names = sorted(rows, key=lambda label: (label.split(".", 1)[0], shapes.index(_SIZE.sub(" at N", label)),
                                            _size(label)))
    head = "| Benchmark | Target | " + " | ".join(
        f"{LABELS[db]}: measured | baseline / bound | ratio | " for db in dbs) + "|"
    out = [head, "|---|---|" + "---|---|---|---|" * len(dbs)]
    for name in names:
        cells = []
        for db in dbs:
            r = rows[name].get(db)
            cells.append(f"{r.measured} | {r.baseline} | {r.ratio} | {MARK[r.met]}" if r else "- | | | ")
        target = next(r.target for r in rows[name].values())
        out.append(f"| {name} | {target} | " + " | ".join(cells) + " |")
    return out


def render(by_db: dict[str, list[Result]]) -> str:
    """docs/benchmarks.md from each database's figures (bench/figures.py)."""
    out = [
        "# Benchmarks: how close the service runs to its limits",
        "",
        "Written by `make bench` (`bench/`); do not edit by hand, run it again. Every figure is a "
        "ratio against a baseline measured in the same run, so a busy machine moves both sides "
        "together; absolute numbers here are for this machine at this time only. Each database's "
        "figures are kept in " + ", ".join(f"`docs/benchmarks-{db}.json`" for db in DATABASES)
        + ": `make bench` measures SQLite (the default), `make bench ARGS=\"--db postgres\"` PostgreSQL "
        "(a throwaway local cluster), and each run replaces only its own database's figures for the "
        "benchmarks it ran.",
        "",
        "Measured by:",
        "",
    ]
    for db, results in by_db.items():
        out += [f"- {LABELS[db]}:", *_runs(results)]
    out += ["", "## Summary", "", *side_by_side(by_db), ""]
    notes = [f"{LABELS[db]}: {n}" for db, results in by_db.items() for r in results for n in r.notes]
    notes += [f"{LABELS[db]}: {r.name} did not run: {r.error}" for db, results in by_db.items()
              for r in results if r.error]
    if notes:
        out += ["Targets missed, and why:", "", *[f"- {n}" for n in notes], ""]
    names = sorted({r.name for results in by_db.values() for r in results}, key=_order)
    for name in names:
        out += [f"## {name}", ""]
        for db, results in by_db.items():
            r = next((r for r in results if r.name == name), None)
            if r is None:
                continue
            out += [f"### {name} on {LABELS[db]}", "",
                    f"({r.elapsed_s:.0f} s; `{r.run.get('command', '?')}`, {r.run.get('date', '?')})", ""]
            if r.error:
                out += [f"Failed: `{r.error}`", ""]
            out += [*r.details, ""]
    primary = by_db.get("sqlite") or next(iter(by_db.values()), [])
    out += recommendations({r.name: r for r in primary},
                           {r.name: r for r in by_db.get("postgres", [])} if "sqlite" in by_db else {})
    return "\n".join(out).rstrip() + "\n"


def _order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def recommendations(by_name: dict[str, Result], postgres: dict[str, Result] | None = None) -> list[str]:
    """What to change where a target is missed (or close), with the evidence from this run
    (`by_name`: SQLite's figures, with PostgreSQL's beside them where measured)."""
    out = ["## Recommendations", "",
           "Changes in code this benchmark does not own, each with the figures behind it (from the "
           "SQLite figures, with PostgreSQL's where they were measured).", ""]
    recv = by_name.get("Receiver throughput")
    if recv and not recv.error and recv.extra.get("best"):
        pg = (postgres or {}).get("Receiver throughput")
        out += _receiver(recv.extra, pg.extra if pg and not pg.error and pg.extra.get("best") else None)
    pipe = by_name.get("Pipeline throughput under Loop's limit")
    if pipe and not pipe.error and pipe.extra.get("completed"):
        x = pipe.extra
        routes = x["loop"]["by_route"]
        details = sum(v for k, v in routes.items() if "details" in k)
        out += [
            "### Pipeline (`workers/names.py`, `integration/workflow/steps.py`)",
            "",
            _loop_calls_per_return(x, details),
            f"2. **Size `worker` for RLM's latency.** Each return makes "
            f"{sum(x['rlm_calls'].values()) / x['completed']:.1f} RLM calls (150 ms each here) on the "
            "`erp` queue, so `worker` moves about concurrency x 60 / (calls x latency) returns a minute, "
            "and that must stay above the Loop bound or the Loop budget goes unused: with 8 processes "
            "the first minute of this burst ran at about 220 returns a minute, RLM-bound, before the "
            f"Loop stage had a backlog; with {x['concurrency']} the first Loop action came "
            f"{x['first_action_s']:.0f} s in. At Loop's real 300/min and one call per return (300 "
            "returns a minute) that is about 300 x calls x latency / 60 processes: at this latency "
            "more than the Procfile's default 3 (`CELERY_CONCURRENCY`) for a merchant at its peak. "
            "The same arithmetic holds for RLM_MAX_CONCURRENT, the merchant's RLM calls at once across "
            "every process: at its old default of 4 this benchmark's Loop stage never had a backlog and "
            "ran at 259 a minute (0.86; 4 x 60 / (6.2 x 0.15 s) = 258), so the default is now 8.",
            "",
        ]
    return out


def _loop_calls_per_return(x: dict, details: int) -> str:
    per_return = x["loop"]["total"] / x["completed"]
    head = f"1. **Each return costs {per_return:.2f} Loop calls** ({details} `details` reads). "
    if per_return <= 1.05:
        return head + ("`act_in_loop` sends the action without reading the return first (Loop refuses "
                       "it on a return that is not open, and the return is read then), so the bound is "
                       "Loop's limit itself: nothing left to gain here.")
    return head + ("Above one per processed return: find which step reads the return (`act_in_loop` "
                   "acts first; `close_rma` reads only when Loop's `return.closed` has not come by "
                   "LOOP_SETTLE_S after the call).")


def _receiver(x: dict, pg: dict | None = None) -> list[str]:
    now, now_base = x["best"]["/webhooks/loop/demo"], x["best"]["/bench/noop"]
    return [
        "### Receiver (`web/webhooks.py`)",
        "",
        f"A delivery costs {now['server_cpu_ms']:.1f} ms of server CPU against "
        f"{now_base['server_cpu_ms']:.2f} ms for the do-nothing baseline; that ratio, not I/O, is what "
        f"caps throughput at {now['rps'] / now_base['rps']:.2f} of the baseline on 2 cores."
        + _on_postgres(pg),
        "",
        "In place already, so not recommended again: the receiver stores first (issue 15): it checks the "
        "signature and commits the raw body, keyed by its SHA-256, with one `INSERT .. ON CONFLICT DO "
        "NOTHING RETURNING id` compiled once and run on the driver's own connection "
        "(`integration/store/inbox.py`); reading the body (JSON, `LoopEventSchema`, the event's key) is "
        "the worker's first step (`integration/workflow/events.py`); the broker message is sent after "
        "the commit by a relay thread in each process, several rows to a message (`web/relay.py`)."
        + _step_costs(x.get("phases") or {}),
        "",
        _p99(x["open"][0], pg["open"][0] if pg else None),
        "",
    ]


def _step_costs(ph: dict) -> str:
    """This run's CPU per delivery for the steps those changes made cheaper (if phases ran)."""
    if not all(k in ph for k in (PARSE, STORE, RELAY, SEND_TASK, WHOLE, BASELINE)):
        return ""
    return (f" Measured per delivery in one process: the whole request {ph[WHOLE]:.2f} ms against "
            f"{ph[BASELINE]:.2f} ms for the baseline's, of which storing {ph[STORE]:.2f} ms and publishing "
            f"{ph[RELAY]:.2f} ms through the relay (against {ph[SEND_TASK]:.2f} ms for a `send_task` each); "
            f"reading the body, now on the worker, {ph[PARSE]:.2f} ms.")


def _on_postgres(pg: dict | None) -> str:
    if not pg:
        return ""
    now, base = pg["best"]["/webhooks/loop/demo"], pg["best"]["/bench/noop"]
    return (f" On PostgreSQL: {now['server_cpu_ms']:.1f} ms against {base['server_cpu_ms']:.2f} ms, "
            f"{now['rps'] / base['rps']:.2f} of the baseline (the database server's own CPU is not in "
            "these figures: it runs in its own processes on the same 2 cores).")


def _p99(at80: dict, pg_at80: dict | None = None) -> str:
    text = f"p99 at 80% of the maximum: {_ms(at80['p99'])}, with p50 {_ms(at80['p50'])}. "
    writers = ("the receiver's writers queue for SQLite's single write lock (threads on a "
               "`threading.Lock`, the two gunicorn processes on a file lock beside the database, "
               "`integration/store/inbox.py`) and are woken in turn instead of sleeping in SQLite's busy "
               "handler (1, 2, 5, ... up to 100 ms per try)")
    if at80["p99"] < 0.050:
        text += f"Within the target: {writers}. "
    elif at80["p50"] < 0.050:
        text += (f"The median stays low while a few deliveries wait far longer, although {writers}. "
                 "What is left is most likely SQLite's WAL checkpoint, which the commit that crosses "
                 "1,000 pages of log runs while it holds the write lock (a run with automatic "
                 "checkpoints off had a p99 of 77 ms where this code had 125 ms), and the load "
                 "generator preempting the server on the 2 shared cores (inferred, not measured "
                 "directly). ")
    else:
        text += ("The median itself is high: at that rate the receiver had no CPU headroom left on the 2 "
                 "cores it shares with the load generator, and requests queued; only a cheaper request "
                 f"buys headroom ({writers}). ")
    text += ("The figure moves from run to run on this shared machine: 80% of a maximum measured "
             "seconds before can land close to saturation. PostgreSQL, the production database, has "
             "no single writer lock (inserts take row locks, and `insert_raw` takes no process lock "
             "there)")
    if pg_at80:
        return text + (f". Measured on PostgreSQL: p99 {_ms(pg_at80['p99'])} at {pg_at80['rps']:.0f} req/s, "
                       f"with p50 {_ms(pg_at80['p50'])}.")
    if at80["p99"] < 0.050:
        return text + "."
    return text + "; running this benchmark against it would confirm that the tail is SQLite's."


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"

