"""Fixtures for the operations tests: one finished return on the real stack, and the CLI."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import main
from tests.stack.helpers import new_return, our_view, receive, wait_for, wait_for_state


@pytest.fixture(scope="session")
def flagged_return(stack) -> dict:
    """A return driven to `complete` with a damaged unit: a flag decision, a note, a timeline."""
    loop_id = new_return(stack, 201)
    view = wait_for_state(stack, loop_id, "transmitted")
    receive(stack, view["rma_number"], "damaged")
    wait_for_state(stack, loop_id, "complete")
    # Loop's `return.updated` (open -> review) may reach us just after the return completes.
    return wait_for(lambda: (v := our_view(stack, loop_id)).get("loop_state") == "review" and v,
                    what=f"Loop's review state of {loop_id}")


@pytest.fixture
def cli():
    """Run a CLI command in-process with extra environment; returns click's Result."""
    def run(*args: str, env: dict | None = None):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return run
