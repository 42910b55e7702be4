"""`make bench`: how close the service runs to the limits that bound it.

One module per benchmark (receiver, pipeline, polling, sweeper, memory, fairness, latency), each returning a `Result` whose
figures are ratios against a baseline measured in the same run; `python -m bench` runs them all
(on SQLite, or with `--db postgres` on a throwaway PostgreSQL cluster: bench/database.py), prints
the table, keeps the figures per database (bench/figures.py) and writes docs/benchmarks.md with
both databases side by side. Nothing here is collected by pytest.
"""
