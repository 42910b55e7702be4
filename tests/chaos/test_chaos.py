"""The short chaos run (the full one is `make chaos`): faults, duplicates, kills and restarts,
and still every return ends as expected, once."""
import io

import pytest

from stack.chaos import run_chaos

pytestmark = pytest.mark.stack


def test_nothing_lost_nothing_done_twice_under_chaos(tmp_path):
    out = io.StringIO()
    fig = run_chaos(count=100, seed=7, workdir=str(tmp_path / "chaos"), out=out)
    report = out.getvalue()
    assert fig.reached_expected == fig.returns, report
    assert fig.rmas_not_one == [], report
    assert fig.loop_actions_wrong == [], report
    assert fig.stuck_events == 0, report
    assert fig.rlm_fault_share >= 0.10, report
    assert len(fig.disruptions) >= 5, report
    assert any("broker restarted" in d for d in fig.disruptions)
    assert sum("SIGKILL" in d for d in fig.disruptions) >= 2
