"""The summary table and docs/benchmarks.md."""
from __future__ import annotations

from datetime import datetime

from .common import Result, Row
from .phases import PARSE, RELAY, SEND_TASK, STORE

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
    return "\n".join("  ".join(str(c)[:60].ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def markdown_table(results: list[Result]) -> list[str]:
    lines = ["| Benchmark | Measured | Baseline / bound | Ratio | Target | |", "|---|---|---|---|---|---|"]
    for r in _rows(results):
        lines.append(f"| {r.benchmark} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} | {MARK[r.met]} |")
    return lines


def render(results: list[Result], *, command: str, host: dict, started_at: datetime, elapsed_s: float,
           load_after: str) -> str:
    by_name = {r.name: r for r in results}
    out = [
        "# Benchmarks: how close the service runs to its limits",
        "",
        "Written by `make bench` (`bench/`); do not edit by hand, run it again. Every figure is a "
        "ratio against a baseline measured in the same run, so a busy machine moves both sides "
        "together; absolute numbers here are for this machine at this time only.",
        "",
        f"- Command: `{command}`",
        f"- Date: {started_at.strftime('%Y-%m-%d %H:%M UTC')}, {elapsed_s / 60:.1f} minutes",
        f"- Machine: {host['cpus']} CPUs ({host['cpu_model']}), {host['memory']} RAM, {host['os']}, "
        f"Python {host['python']}",
        f"- Load average (1/5/15 min) at the start: {host['load_avg']}; at the end: {load_after} "
        "(other work on the machine shares the cores)",
        "",
        "## Summary",
        "",
        *markdown_table(results),
        "",
    ]
    notes = [n for r in results for n in r.notes] + [f"{r.name} did not run: {r.error}" for r in results if r.error]
    if notes:
        out += ["Targets missed, and why:", "", *[f"- {n}" for n in notes], ""]
    for number, r in enumerate(results, start=1):
        out += [f"## {r.name}", "", f"({r.elapsed_s:.0f} s)", ""]
        if r.error:
            out += [f"Failed: `{r.error}`", ""]
        out += r.details + [""]
    out += recommendations(by_name)
    return "\n".join(out).rstrip() + "\n"


def splice(existing: str, results: list[Result], *, command: str, host: dict, started_at: datetime,
           load_after: str) -> str:
    """`existing` with each result's section replaced (or added before the recommendations),
    the section carrying its own run's command, date, machine and summary rows."""
    text = existing
    for r in results:
        section = [f"## {r.name}", "",
                   f"Run on its own: `{command}`, {started_at.strftime('%Y-%m-%d %H:%M UTC')}, "
                   f"{r.elapsed_s / 60:.1f} minutes, on {host['cpus']} CPUs ({host['cpu_model']}), "
                   f"{host['memory']} RAM, Python {host['python']}; load average {host['load_avg']} at the "
                   f"start, {load_after} at the end.", "", *markdown_table([r]), ""]
        if r.notes:
            section += ["Targets missed, and why:", "", *[f"- {n}" for n in r.notes], ""]
        if r.error:
            section += [f"Failed: `{r.error}`", ""]
        section += r.details + [""]
        body = "\n".join(section).rstrip() + "\n\n"
        head = f"## {r.name}\n"
        if head in text:
            start = text.index(head)
            end = text.find("\n## ", start + len(head))
            text = text[:start] + body + (text[end + 1:] if end != -1 else "")
        elif "## Recommendations\n" in text:
            at = text.index("## Recommendations\n")
            text = text[:at] + body + text[at:]
        else:
            text = text.rstrip() + "\n\n" + body
    return text.rstrip() + "\n"


def recommendations(by_name: dict[str, Result]) -> list[str]:
    """What to change where a target is missed (or close), with the evidence from this run."""
    out = ["## Recommendations", "",
           "Changes in code this benchmark does not own, each with the figures behind it.", ""]
    recv = by_name.get("Receiver throughput")
    if recv and not recv.error:
        out += _receiver(recv.extra)
    pipe = by_name.get("Pipeline throughput under Loop's limit")
    if pipe and not pipe.error and pipe.extra.get("completed"):
        x = pipe.extra
        routes = x["loop"]["by_route"]
        details = sum(v for k, v in routes.items() if "details" in k)
        out += [
            "### Pipeline (`workers/names.py`, `integration/workflow/steps.py`)",
            "",
            f"1. **Each return costs {x['loop']['total'] / x['completed']:.2f} Loop calls**: "
            f"`act_in_loop` reads the return ({details} `details` calls) before it processes it. The "
            "read guards against acting on a return a person changed, but Loop already refuses to "
            "process a return that is not open, and `_call_action` re-reads on any refusal. Acting "
            "first and reading only on a refusal would make it one call per processed return and "
            f"double the bound, from {real_bound(x):.0f} to {2 * real_bound(x):.0f} returns a minute at "
            "Loop's real 300/min: the single largest gain available under the limit, and a change to "
            "the pipeline's safety argument for its owner to weigh.",
            f"2. **Size `worker` for RLM's latency.** Each return makes "
            f"{sum(x['rlm_calls'].values()) / x['completed']:.1f} RLM calls (150 ms each here) on the "
            "`erp` queue, so `worker` moves about concurrency x 60 / (calls x latency) returns a minute, "
            "and that must stay above the Loop bound or the Loop budget goes unused: with 8 processes "
            "the first minute of this burst ran at about 220 returns a minute, RLM-bound, before the "
            f"Loop stage had a backlog; with {x['concurrency']} the first Loop action came "
            f"{x['first_action_s']:.0f} s in. At Loop's real 300/min (150 returns a minute) the "
            "Procfile's 4 processes are enough at this latency.",
            "",
        ]
    return out


def _receiver(x: dict) -> list[str]:
    now, now_base = x["best"]["/webhooks/loop/demo"], x["best"]["/bench/noop"]
    lean = {r["path"]: r for r in x.get("lean") or []}
    raw, base = lean.get("/bench/lean-raw/demo"), lean.get("/bench/noop")
    floor = ("(not measured)" if not raw or not base else
             f"{raw['rps']:.0f} req/s, {raw['server_cpu_ms']:.2f} ms server CPU per delivery, "
             f"{raw['rps'] / base['rps']:.2f} of the baseline")
    return [
        "### Receiver (`web/webhooks.py`)",
        "",
        f"A delivery costs {now['server_cpu_ms']:.1f} ms of server CPU against "
        f"{now_base['server_cpu_ms']:.2f} ms for the do-nothing baseline; that ratio, not I/O, is what "
        f"caps throughput at {now['rps'] / now_base['rps']:.2f} of the baseline on 2 cores.",
        "",
        "In place already, so not recommended again: `LoopEventSchema` built once "
        "(`integration/loop/webhooks.py`); the inbox row stored with one cached Core `INSERT .. ON CONFLICT "
        "DO NOTHING RETURNING id` (`integration/store/inbox.py`); the broker message sent after the commit "
        "by a relay thread in each process, several rows to a message (`web/relay.py`)."
        + _step_costs(x.get("phases") or {}),
        "",
        "**What is left is a contract decision.** To reach half of a do-nothing endpoint the receiver "
        "has to be little more than a verified append: the floor measured here "
        "(`/bench/lean-raw/<merchant>`: signature, `json.loads`, the dedupe fields read straight from "
        "the JSON, one prepared INSERT under the same lock, the same relay) is "
        f"{floor}. That moves schema validation to the worker, so an unusable event would be answered "
        "202 and failed in the inbox instead of 422: a change to the receiver's contract (README, "
        "*Receiver answers*) for the lead to decide, not a tuning step.",
        "",
        _p99(x["open"][0]),
        "",
    ]


def _step_costs(ph: dict) -> str:
    """This run's CPU per delivery for the steps those changes made cheaper (if phases ran)."""
    if not all(k in ph for k in (PARSE, STORE, RELAY, SEND_TASK)):
        return ""
    return (f" Measured per delivery: parsing {ph[PARSE]:.2f} ms, storing {ph[STORE]:.2f} ms, publishing "
            f"{ph[RELAY]:.2f} ms through the relay against {ph[SEND_TASK]:.2f} ms for a `send_task` each.")


def _p99(at80: dict) -> str:
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
                 f"(the floor above) buys headroom ({writers}). ")
    text += ("The figure moves from run to run on this shared machine: 80% of a maximum measured "
             "seconds before can land close to saturation. PostgreSQL, the production database, has "
             "no single writer lock (inserts take row locks, and `insert_event` takes no process lock "
             "there)")
    if at80["p99"] < 0.050:
        return text + "."
    return text + "; running this benchmark against it would confirm that the tail is SQLite's."


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def real_bound(x: dict) -> float:
    """Returns per minute Loop's real 300/min allows at the measured calls per return."""
    return 300 / (x["loop"]["total"] / x["completed"])
