"""`make bench`: how close the service runs to the limits that bound it.

One module per benchmark (receiver, pipeline, polling, memory), each returning a `Result` whose
figures are ratios against a baseline measured in the same run; `python -m bench` runs them all,
prints the table and writes docs/benchmarks.md. Nothing here is collected by pytest.
"""
