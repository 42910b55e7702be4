"""The benchmark report keeps each database's figures: a run on one never erases the other's."""
from __future__ import annotations

import json

from bench import figures
from bench.common import Result, Row
from bench.report import render, side_by_side

RUN = {"command": "make bench", "date": "2026-12-02 16:00 UTC", "host": {"cpus": "2"}}


def sweeper(measured: str, **kwargs) -> Result:
    return Result("Sweeper cost", rows=[Row("5. Sweeper: one cycle", measured, "base", "1.00", "flat", True)],
                  details=[f"details {measured}"], run=dict(RUN), **kwargs)


def polling(measured: str) -> Result:
    return Result("Polling cost", rows=[Row("3. Polling: one cycle", measured, "base", "1.00", "< 1 s", True)],
                  run=dict(RUN))


def test_a_postgres_run_keeps_the_sqlite_figures(tmp_path):
    report = tmp_path / "benchmarks.md"
    figures.record(report, "sqlite", [sweeper("18 ms"), polling("105 ms")])
    sqlite_file = figures.figures_path(report, "sqlite").read_text()

    everything = figures.record(report, "postgres", [sweeper("44 ms")])

    assert figures.figures_path(report, "sqlite").read_text() == sqlite_file
    assert [r.name for r in everything["sqlite"]] == ["Polling cost", "Sweeper cost"]
    assert [r.name for r in everything["postgres"]] == ["Sweeper cost"]
    text = render(everything)
    summary = next(line for line in text.splitlines() if line.startswith("| 5. Sweeper"))
    assert "18 ms" in summary and "44 ms" in summary  # side by side, on one line
    assert "details 18 ms" in text and "details 44 ms" in text and "105 ms" in text


def test_a_run_replaces_only_the_benchmarks_it_ran(tmp_path):
    report = tmp_path / "benchmarks.md"
    figures.record(report, "sqlite", [sweeper("18 ms"), polling("105 ms")])
    everything = figures.record(report, "sqlite", [sweeper("20 ms")])
    by_name = {r.name: r for r in everything["sqlite"]}
    assert by_name["Sweeper cost"].rows[0].measured == "20 ms"
    assert by_name["Polling cost"].rows[0].measured == "105 ms"


def test_a_failed_benchmark_keeps_its_earlier_figures_and_says_so(tmp_path):
    report = tmp_path / "benchmarks.md"
    figures.record(report, "postgres", [sweeper("44 ms")])
    failed = Result("sweeper", error="RuntimeError: boom", run=dict(RUN))  # as python -m bench names it
    everything = figures.record(report, "postgres", [failed])
    (kept,) = everything["postgres"]
    assert kept.rows[0].measured == "44 ms"
    assert any("RuntimeError: boom" in note for note in kept.notes)


def test_figures_survive_the_json_round_trip(tmp_path):
    path = tmp_path / "f.json"
    result = sweeper("18 ms", extra={"1000": {"cpu_s": float("nan"), "when": object()}})
    figures.save(path, "sqlite", [result])
    json.loads(path.read_text())  # strict JSON: no NaN
    (back,) = figures.load(path)
    assert back.rows == result.rows and back.run == RUN
    assert back.extra["1000"]["cpu_s"] is None


def test_the_summary_puts_each_size_of_a_figure_together():
    def row(label: str) -> Row:
        return Row(label, "x", "b", "1", "t", True)

    full = Result("Sweeper cost", rows=[row("5. Sweeper: at 1,000 open"), row("5. Sweeper: at 100,000 open")])
    quick = Result("Sweeper cost", rows=[row("5. Sweeper: at 1,000 open"), row("5. Sweeper: at 10,000 open")])
    polling = Result("Polling cost", rows=[row("3. Polling: at 10,000 open")])
    lines = side_by_side({"sqlite": [full], "postgres": [polling, quick]})[2:]
    assert [line.split(" | ")[0] for line in lines] == [
        "| 3. Polling: at 10,000 open", "| 5. Sweeper: at 1,000 open", "| 5. Sweeper: at 10,000 open",
        "| 5. Sweeper: at 100,000 open"]
    assert lines[1].count("met") == 2  # measured on both databases: one line
