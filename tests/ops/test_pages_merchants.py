"""The /ops merchants pages with the Flask test client, against both sandboxes: login and CSRF,
the list, a stored merchant shown with its secrets masked, add (validated, secrets never sent
back), update, disable and enable, and the check, subscribe and backfill buttons, each naming the
operator. SQLite and PostgreSQL."""
from __future__ import annotations

import logging

import pytest
import requests
from cryptography.fernet import Fernet

from integration.store import merchant_store
from integration.store.models import Return
from tests.ops.test_onboarding import KNOWN, LOOP_KEY, RLM_KEY, servers  # noqa: F401  (the fixture)
from tests.ops.test_pages import TOKEN, basic
from tests.ops.test_pages_operators import ALICE, csrf_as

HOOK = "pages-hook-secret-0123456"
MERCHANT_KEYS = Fernet.generate_key().decode()


@pytest.fixture
def steps():
    return []


@pytest.fixture
def ops(sessions, merchants, steps, servers):  # noqa: F811
    from web import create_app

    for server in servers.values():
        requests.post(f"{server.url}/_sim/reset", timeout=5).raise_for_status()
    app = create_app({"TESTING": True, "SESSIONS": sessions, "MERCHANTS": merchants,
                      "ENQUEUE_EVENT": lambda _id: None, "ENQUEUE_STEP": lambda *a: steps.append(a),
                      "ADMIN_TOKEN": TOKEN, "OPERATOR_TOKENS": {"alice": ALICE},
                      "MERCHANT_KEYS": MERCHANT_KEYS})
    return app.test_client()


def form(servers, **changes) -> dict:  # noqa: F811
    values = {"name": "acme", "loop_base_url": servers["loop"].url, "loop_api_key": LOOP_KEY,
              "webhook_secrets": HOOK, "rlm_base_url": servers["rlm"].url, "rlm_company": "90",
              "rlm_username": "svc", "rlm_key": RLM_KEY, "division_number": "10", "warehouse_number": "1",
              "more": "criteria.expiry_days = 14"}
    values.update(changes)
    return values


def add(ops, servers, **changes):  # noqa: F811
    data = {**form(servers, **changes), "csrf": csrf_as(ops, ALICE, "/ops/merchants/new")}
    return ops.post("/ops/merchants", headers=basic(ALICE), data=data)


def page(ops, path: str = "/ops/merchants/acme") -> str:
    answer = ops.get(path, headers=basic(ALICE))
    assert answer.status_code == 200, answer.status_code
    return answer.get_data(as_text=True)


def no_secret(html: str) -> None:
    for secret in (LOOP_KEY, RLM_KEY, HOOK):
        assert secret not in html


def post(ops, path: str, **data):
    return ops.post(path, headers=basic(ALICE), data={"csrf": csrf_as(ops, ALICE, "/ops/merchants/acme"), **data})


def test_the_pages_need_a_login_and_posts_need_the_operators_csrf_token(ops, servers):  # noqa: F811
    for path in ("/ops/merchants", "/ops/merchants/new", "/ops/merchants/demo"):
        assert ops.get(path).status_code == 401
        assert ops.get(path, headers=basic("wrong")).status_code == 401
    assert ops.post("/ops/merchants", headers=basic(ALICE), data=form(servers)).status_code == 403
    admins = csrf_as(ops, TOKEN, "/ops/merchants/new")
    assert ops.post("/ops/merchants", headers=basic(ALICE), data={**form(servers), "csrf": admins}).status_code == 403
    cross = ops.post("/ops/merchants", headers={**basic(ALICE), "Origin": "https://evil.example"},
                     data={**form(servers), "csrf": csrf_as(ops, ALICE, "/ops/merchants/new")})
    assert cross.status_code == 403
    assert ops.post("/ops/merchants/demo/check", headers=basic(ALICE)).status_code == 403
    assert "acme" not in page(ops, "/ops/merchants")  # nothing was added


def test_a_merchant_from_the_environment_is_shown_masked_and_changed_there(ops):
    html = page(ops, "/ops/merchants/demo")
    for secret in ("demo-loop-key", "demo-rlm-key", "old-secret", "test-webhook-secret"):
        assert secret not in html
    assert "****-key" in html and "environment" in html
    assert "Update</button>" not in html and "Disable</button>" not in html  # only stored ones
    assert 'name="url" size="50" value="http://localhost"' in html  # the subscribe form's suggestion
    behind = ops.get("/ops/merchants/demo", headers={**basic(ALICE), "X-Forwarded-Proto": "https"})
    assert 'value="https://localhost"' in behind.get_data(as_text=True)


def test_add_shows_the_merchant_with_its_secrets_masked(ops, servers, sessions, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    answer = add(ops, servers)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/ops/merchants/acme")
    html = page(ops)
    no_secret(html)
    assert "****" + LOOP_KEY[-4:] in html and "****" + RLM_KEY[-4:] in html and "****" + HOOK[-4:] in html
    assert "acme: added by alice" in html and "Last change: added" in html and "by alice" in html
    listed = page(ops, "/ops/merchants")
    assert '<a href="/ops/merchants/acme">acme</a>' in listed and "never checked" in listed
    assert "<td>table</td>" in listed and "<td>environment</td>" in listed  # demo: from the environment
    with sessions() as s:
        stored = merchant_store.load_all(s, merchant_store.parse_keys(MERCHANT_KEYS))["acme"]
    assert stored.loop_api_key == LOOP_KEY and stored.criteria.expiry_days == 14 and stored.rlm_company == 90
    assert any(getattr(r, "operator", None) == "alice" and getattr(r, "action", "") == "merchants.add"
               for r in caplog.records)
    no_secret(caplog.text)


def test_a_refused_add_names_the_key_and_sends_no_secret_back(ops, servers):  # noqa: F811
    answer = add(ops, servers, rlm_company="ninety")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "Not added: rlm_company: Not a valid integer." in html
    no_secret(html)
    assert f'value="{servers["rlm"].url}"' in html  # what is not secret is kept
    assert add(ops, servers).status_code == 303
    again = add(ops, servers)
    assert again.status_code == 400 and "already stored: acme" in again.get_data(as_text=True)


def test_update_disable_and_enable_a_stored_merchant(ops, servers, sessions):  # noqa: F811
    add(ops, servers)
    answer = post(ops, "/ops/merchants/acme/update", changes="criteria.expiry_days = 21\nrlm_key = \"new-rlm-key-987654\"")
    assert answer.status_code == 303
    html = page(ops)
    assert "acme: updated by alice (criteria.expiry_days, rlm_key)" in html
    assert "new-rlm-key-987654" not in html and "****7654" in html
    bad = post(ops, "/ops/merchants/acme/update", changes="criteria.expiry_days = soon")
    assert bad.status_code == 303 and "not changed: criteria.expiry_days" in page(ops)
    assert post(ops, "/ops/merchants/acme/disable").status_code == 303
    assert "acme: disabled by alice" in page(ops)
    assert "no (disabled)" in page(ops, "/ops/merchants")
    with sessions() as s:
        assert merchant_store.stored_names(s) == {"acme": False}
    refused = post(ops, "/ops/merchants/acme/backfill", since="2026-01-01")
    assert refused.status_code == 303 and "acme is disabled: enable it first" in page(ops)
    assert post(ops, "/ops/merchants/acme/enable").status_code == 303
    with sessions() as s:
        assert merchant_store.stored_names(s) == {"acme": True}
    assert post(ops, "/ops/merchants/nobody/disable").status_code == 404
    toml_one = post(ops, "/ops/merchants/demo/disable")
    assert toml_one.status_code == 303 and "only a stored merchant can be disabled here" in page(ops, "/ops/merchants/demo")


def test_the_check_button_runs_the_checks_and_the_list_shows_the_last_result(ops, servers):  # noqa: F811
    add(ops, servers, rlm_key="wrong-rlm-key-000000")
    assert post(ops, "/ops/merchants/acme/check").status_code == 303
    html = page(ops)
    assert "acme: check by alice: 1 of 6 checks failed" in html
    assert "The user/key combination does not exist (HTTP 401)" in html
    assert "wrong-rlm-key" not in html
    post(ops, "/ops/merchants/acme/update", changes=f'rlm_key = "{RLM_KEY}"')
    post(ops, "/ops/merchants/acme/check")
    listed = page(ops, "/ops/merchants")
    assert ">ok</span>" in listed and "checks passed" in listed and "by alice" in listed
    no_secret(listed + page(ops))


def test_subscribe_and_backfill_buttons(ops, servers, sessions, steps):  # noqa: F811
    add(ops, servers)
    requests.post(f"{servers['loop'].url}/_sim/config", json={"refused_topics": ["return.processing"]},
                  timeout=5).raise_for_status()
    assert post(ops, "/ops/merchants/acme/subscribe", url="https://x.example.com").status_code == 303
    html = page(ops)
    assert "acme: subscribe by alice: 1 of 2 topics refused at https://x.example.com/webhooks/loop/acme" in html
    assert "Must be one of the following values:return,label,restock (HTTP 422)" in html
    loop_id = requests.post(f"{servers['loop'].url}/_sim/returns", timeout=5,
                            json={"order_name": "#1", "line_items": [KNOWN]}).json()["id"]
    assert post(ops, "/ops/merchants/acme/backfill", since="2026-01-01").status_code == 303
    assert "acme: backfill by alice: 1 open returns created since 2026-01-01 recorded" in page(ops)
    post(ops, "/ops/merchants/acme/backfill", since="2026-01-01")
    assert "nothing to do" in page(ops)
    with sessions() as s:
        rows = s.query(Return).filter_by(merchant="acme").all()
        assert [r.loop_return_id for r in rows] == [str(loop_id)]
    assert [step for step, _ in steps] == ["create_rma"]
    bad = post(ops, "/ops/merchants/acme/backfill", since="yesterday")
    assert bad.status_code == 303 and "since must be a day as YYYY-MM-DD" in page(ops)
