"""The operator pages as a browser shows them: headless Chromium against the real stack, with a
screenshot of each page kept in test-artifacts/."""
from __future__ import annotations

import pytest

from tests import system

from . import chromium

pytestmark = pytest.mark.stack


@pytest.fixture(scope="session", autouse=True)
def browser() -> str:
    """Chromium, looked for before the stack starts: without it these tests are skipped."""
    return system.chromium()


def page_url(stack, path: str) -> str:
    # HTTP Basic: any user name, ADMIN_TOKEN as the password.
    return stack.url("web").replace("http://", f"http://ops:{stack.env['ADMIN_TOKEN']}@") + path


def test_returns_list(stack, flagged_return, tmp_path):
    url = page_url(stack, "/ops/returns?merchant=demo&state=complete")
    html = chromium.render(url, tmp_path / "profile", "ops-returns.png")
    assert flagged_return["loop_return_id"] in html
    assert '<a href="/ops/returns?merchant=demo&amp;state=complete" class="on">complete' in html


def test_return_page_answers_what_happened_and_why(stack, flagged_return, tmp_path):
    loop_id = flagged_return["loop_return_id"]
    url = page_url(stack, f"/ops/returns/demo/{loop_id}")
    html = chromium.render(url, tmp_path / "profile", "ops-return.png", height=1600)  # to the timeline
    decision = flagged_return["decision"]
    for text in (f"Return {loop_id}", str(flagged_return["rma_number"]), "<strong>flag</strong>",
                 decision["loop_note"], "Rules that fired", "condition", "Receipts in RLM",
                 "DAMAGED", "Timeline", "decision: flag", "flagged in Loop with a note"):
        assert text in html, text
