"""Per-operator logins (OPERATOR_TOKENS): each token logs in as its operator, whose name every
action from the pages records; the API takes the same tokens."""
from __future__ import annotations

import base64

import pytest

from integration.store.models import Return
from integration.workflow import lifecycle as lc
from tests.ops.test_pages import TOKEN, add_return, basic

ALICE = "alice-token-0123456789"


@pytest.fixture
def steps():
    return []


@pytest.fixture
def ops(sessions, merchants, steps):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ENQUEUE_STEP": lambda *a: steps.append(a),
                      "ADMIN_TOKEN": TOKEN, "OPERATOR_TOKENS": {"alice": ALICE}})
    return app.test_client()


def csrf_as(ops, password: str, path: str) -> str:
    page = ops.get(path, headers=basic(password)).get_data(as_text=True)
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_an_operator_token_logs_in_under_its_name_and_a_wrong_one_is_refused(ops):
    page = ops.get("/ops/returns", headers=basic(ALICE))
    assert page.status_code == 200 and "· alice<" in page.get_data(as_text=True)
    assert "· admin<" in ops.get("/ops/returns", headers=basic()).get_data(as_text=True)
    for wrong in ("wrong", ALICE[:-1], ALICE + "x", "alice", ""):
        answer = ops.get("/ops/returns", headers=basic(wrong))
        assert answer.status_code == 401, wrong
        assert ALICE not in answer.get_data(as_text=True)


def test_a_retry_from_the_pages_names_the_operator_on_the_timeline(ops, sessions, steps):
    ret = add_return(sessions, "4001", lc.NEEDS_ATTENTION, attention_step="create_rma",
                     attention_reason="SKU unknown to RLM")
    path = "/ops/returns/demo/4001"
    admins = csrf_as(ops, TOKEN, path)
    # One operator's CSRF token does not let another post.
    assert ops.post(f"{path}/retry", headers=basic(ALICE), data={"csrf": admins}).status_code == 403
    answer = ops.post(f"{path}/retry", headers=basic(ALICE), data={"csrf": csrf_as(ops, ALICE, path)})
    assert answer.status_code == 303 and steps == [("create_rma", ret.id)]
    with sessions() as s:
        last = s.get(Return, ret.id).timeline[-1]
        assert (last.cause, last.detail) == ("retry requested by an operator", "by alice; SKU unknown to RLM")
    assert "by alice; SKU unknown to RLM" in ops.get(path, headers=basic(ALICE)).get_data(as_text=True)


def test_the_api_takes_an_operator_token_too(ops, sessions):
    add_return(sessions, "4002", lc.COMPLETE)
    for token, status in ((ALICE, 200), (TOKEN, 200), ("wrong", 401)):
        answer = ops.get("/api/returns/4002", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, token
    basic_alice = "Basic " + base64.b64encode(f"x:{ALICE}".encode()).decode()
    assert ops.get("/api/returns/4002", headers={"Authorization": basic_alice}).status_code == 401


def test_operator_tokens_alone_do_not_open_the_pages(sessions, merchants):
    from web import create_app

    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ADMIN_TOKEN": None, "OPERATOR_TOKENS": {"alice": ALICE}})
    assert app.test_client().get("/ops/returns", headers=basic(ALICE)).status_code == 403
