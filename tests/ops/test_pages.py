"""Operator pages with the Flask test client: authentication, CSRF, filters, the buttons."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from integration.store.models import Return
from integration.workflow import lifecycle as lc

TOKEN = "pages-token"


@pytest.fixture
def steps():
    return []


@pytest.fixture
def ops(sessions, merchants, steps):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ENQUEUE_STEP": lambda *a: steps.append(a),
                      "ADMIN_TOKEN": TOKEN})
    return app.test_client()


def basic(password: str = TOKEN) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def add_return(sessions, loop_id: str, state: str, **fields) -> Return:
    with sessions() as s:
        ret = Return(merchant="demo", loop_return_id=loop_id, state=lc.RECEIVED, units=[], rma_lines=[],
                     order_name=f"#{loop_id}", **fields)
        s.add(ret)
        s.flush()
        if state != lc.RECEIVED:
            ret.state = state
            lc.note(ret, "test fixture", f"put in {state}")
        s.commit()
        return ret


def csrf(ops, path: str) -> str:
    page = ops.get(path, headers=basic()).get_data(as_text=True)
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_pages_need_the_admin_token_as_basic_password(ops):
    assert ops.get("/ops/returns").status_code == 401
    assert "Basic" in ops.get("/ops/returns").headers["WWW-Authenticate"]
    assert ops.get("/ops/returns", headers=basic("wrong")).status_code == 401
    page = ops.get("/ops/returns", headers=basic())
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no scripts


def test_pages_are_off_without_an_admin_token(sessions, merchants):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants, "ADMIN_TOKEN": None})
    assert app.test_client().get("/ops/returns", headers=basic()).status_code == 403


def test_the_list_filters_by_state_and_counts_each_state(ops, sessions):
    add_return(sessions, "1001", lc.COMPLETE, rma_number=3001, decision="process")
    add_return(sessions, "1002", lc.COMPLETE, rma_number=3002, decision="flag")
    add_return(sessions, "1003", lc.NEEDS_ATTENTION, attention_reason="RLM rejected the RMA")
    page = ops.get("/ops/returns?merchant=demo&state=complete", headers=basic()).get_data(as_text=True)
    assert "1001" in page and "1002" in page and "1003" not in page
    assert ">all 3<" in page
    assert 'state=needs_attention' in page and '<span class="state needs_attention">1</span>' in page
    found = ops.get("/ops/returns?q=3002", headers=basic()).get_data(as_text=True)  # by RMA number
    assert "1002" in found and "1001" not in found


def test_retry_button_posts_with_csrf_and_resumes_the_failed_step(ops, sessions, steps):
    ret = add_return(sessions, "2001", lc.NEEDS_ATTENTION, attention_step="create_rma",
                     attention_reason="SKU unknown to RLM")
    path = "/ops/returns/demo/2001"
    page = ops.get(path, headers=basic()).get_data(as_text=True)
    assert "Retry create_rma" in page and "Re-decide" not in page
    assert ops.post(f"{path}/retry", headers=basic(), data={}).status_code == 403
    token = csrf(ops, path)
    cross = {**basic(), "Origin": "https://evil.example"}
    assert ops.post(f"{path}/retry", headers=cross, data={"csrf": token}).status_code == 403
    assert steps == []
    answer = ops.post(f"{path}/retry", headers=basic(), data={"csrf": token})
    assert answer.status_code == 303 and answer.headers["Location"].endswith(path)
    assert steps == [("create_rma", ret.id)]
    after = ops.get(path, headers=basic()).get_data(as_text=True)
    assert "retrying create_rma" in after  # the flash message
    assert "retry requested by an operator" in after  # and the timeline


def test_redecide_button_sends_a_decided_return_back_to_its_decision(ops, sessions, steps):
    ret = add_return(sessions, "3001", lc.DECIDED, rma_number=3100, decision="flag",
                     loop_note="RLM RA 3100: missing 1 x X", decision_detail={"rules": ["missing"]})
    path = "/ops/returns/demo/3001"
    assert "Re-decide" in ops.get(path, headers=basic()).get_data(as_text=True)
    ops.post(f"{path}/redecide", headers=basic(), data={"csrf": csrf(ops, path)})
    assert steps == [("decide", ret.id)]
    with sessions() as s:
        again = s.get(Return, ret.id)
        assert again.state == lc.TRANSMITTED
        assert again.decision is None and again.loop_note is None
        causes = [t.cause for t in again.timeline]
    assert causes[-2:] == ["held for a new decision by an operator", "re-decide requested by an operator"]


def test_no_redecide_once_loop_was_acted_on(ops, sessions, steps):
    add_return(sessions, "3002", lc.DECIDED, decision="process",
               loop_action_claimed_at=datetime.now(UTC))
    path = "/ops/returns/demo/3002"
    assert "Re-decide" not in ops.get(path, headers=basic()).get_data(as_text=True)
    add_return(sessions, "3003", lc.NEEDS_ATTENTION, attention_step="decide")  # a page with a form
    ops.post(f"{path}/redecide", headers=basic(), data={"csrf": csrf(ops, "/ops/returns/demo/3003")})
    assert steps == []
    assert "only a return decided but not yet acted on" in ops.get(path, headers=basic()).get_data(as_text=True)


def test_unknown_return_is_404(ops, sessions, steps):
    assert ops.get("/ops/returns/demo/999999", headers=basic()).status_code == 404
    add_return(sessions, "3004", lc.NEEDS_ATTENTION)  # a page with a form, for its CSRF token
    token = csrf(ops, "/ops/returns/demo/3004")
    for action in ("retry", "redecide"):
        answer = ops.post(f"/ops/returns/demo/999999/{action}", headers=basic(), data={"csrf": token})
        assert answer.status_code == 404, action
    assert steps == []
