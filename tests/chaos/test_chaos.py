"""The short chaos run (the full one is `make chaos`), on SQLite and on PostgreSQL: faults,
duplicates, kills and restarts, and still every return ends as expected, once; checked from our
API and from the sandboxes' own ledgers."""
import io

import pytest

from stack.chaos import Hostility, run_chaos
from tests.system import postgres_bindir

# Loop's queue a minute at most (the full run: three), so the outcome window fits in a test.
SHORT = Hostility(processing_max_s=60.0, outcome_window_s=120.0)

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("database, returns, seed", [("sqlite", 100, 7), ("postgres", 100, 7)])
def test_nothing_lost_nothing_done_twice_under_chaos(tmp_path, database, returns, seed):
    if database == "postgres":
        postgres_bindir()  # or skipped (fails under CI=true)
    out = io.StringIO()
    fig = run_chaos(count=returns, seed=seed, workdir=str(tmp_path / "chaos"), out=out, database=database,
                    hostility=SHORT)
    report = out.getvalue()
    print(report)  # shown with -s, or on a failure
    assert fig.database.startswith(database), report
    assert f"database                               {database}" in report
    assert fig.reached_expected == fig.returns, report
    assert fig.rmas_not_one == [], report
    assert fig.loop_actions_wrong == [], report
    assert fig.stuck_events == 0, report
    # From the sandboxes' ledgers, not our database; and where each return ended, from our API.
    assert fig.ledger_processing_wrong == [], report
    assert fig.ledger_flag_wrong == [], report
    assert fig.ledger_ras_not_one == [], report
    assert fig.not_settled == [], report
    assert fig.past_deadline == 0, report
    assert fig.rlm_fault_share >= 0.10, report
    assert len(fig.disruptions) >= 5, report
    assert any("broker restarted" in d for d in fig.disruptions)
    assert sum("SIGKILL" in d for d in fig.disruptions) >= 2
    assert fig.ok, report
    # The throwaway cluster is gone with the stack; its log is kept with the others.
    assert not (tmp_path / "chaos" / "postgres").exists()
    if database == "postgres":
        assert (tmp_path / "chaos" / "logs" / "postgres.log").exists()
        assert 0 < fig.peak_db_connections
