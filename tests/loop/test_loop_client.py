"""The Loop client against the Loop sandbox over real HTTP: every method, one test per quirk (docs/loop-api.md)."""
from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask, jsonify

from integration.errors import FinalError, NotFound, RetryableError
from integration.loop.client import LoopClient, truncate_note
from sandbox.common import ServerThread
from tests.sandboxes import HANG_S, LOOP_KEY, SHORT_TIMEOUT, TIMEOUT


def window(hours: float = 1.0) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"start": (now - dt.timedelta(hours=hours)).strftime(fmt),
            "end": (now + dt.timedelta(minutes=5)).strftime(fmt)}


# --- reads ---------------------------------------------------------------------------------------

def test_get_return_has_integer_ids_and_one_line_per_unit(loop, loop_sim):
    created = loop_sim.new_return(units=3)
    details = loop.get_return(str(created["id"]))
    assert details["id"] == created["id"] and isinstance(details["id"], int)
    assert len(details["line_items"]) == 3 and "quantity" not in details["line_items"][0]


def test_unknown_return_is_not_found_with_loops_code(loop, loop_sim):
    with pytest.raises(NotFound) as caught:
        loop.get_return("999")
    assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")


def test_list_follows_next_page_url_verbatim_to_the_last_page(loop, loop_sim, session):
    ids = [loop_sim.new_return(units=1)["id"] for _ in range(5)]
    seen = [r["id"] for r in loop.iter_returns(**window(), filter_by="created_at", page_size=2)]
    assert seen == ids
    lists = [url for _, url in session.sent if "/warehouse/return/list" in url]
    assert len(lists) == 3
    assert all("cursor=" in url and "from=" not in url for url in lists[1:])  # the page URL, not rebuilt


def test_list_unpaginated_bare_array_is_read(loop, loop_sim, session):
    ids = [loop_sim.new_return(units=1)["id"] for _ in range(3)]
    assert [r["id"] for r in loop.iter_returns(**window(), paginate=False)] == ids
    query = parse_qs(urlsplit(session.sent[-1][1]).query)
    assert query["paginate"] == ["false"] and "pageSize" not in query


def test_list_default_states_leave_out_review_and_cancelled(loop, loop_sim):
    by_state = {}
    for state in ("open", "review", "closed", "cancelled", "expired"):
        ret = loop_sim.new_return(units=1)
        if state != "open":
            loop_sim.set_state(ret["id"], state)
        by_state[state] = ret["id"]
    default = {r["id"] for r in loop.iter_returns(**window())}
    assert default == {by_state[s] for s in ("open", "closed", "expired")}
    for state in ("review", "cancelled"):
        assert [r["id"] for r in loop.iter_returns(**window(), state=state)] == [by_state[state]]
    assert [r["id"] for r in loop.iter_returns(**window(), state="needs review")] == [by_state["review"]]
    every = sorted(r["id"] for r in loop.iter_returns_every_state(**window()))
    assert every == sorted(by_state.values())


def test_list_unknown_state_is_refused_before_any_call(loop, session):
    with pytest.raises(ValueError):
        next(loop.iter_returns(**window(), state="processed"))  # Loop has no processed state
    assert session.sent == []


@pytest.mark.parametrize("params, message", [
    ({"start": "2024-01-01 00:00:00", "end": "2024-06-01 00:00:00"},
     "The date range may not be greater than 120 days."),
    ({**window(), "page_size": 751}, "The page size may not be greater than 750."),
    ({"start": "yesterday", "end": "today"}, "The from field must be a date like 2023-01-01 00:00:00 "
                                             "or 2023-01-01T00:00:00.000Z."),
    ({**window(), "filter_by": "edited_at"}, "The selected filter is invalid."),
])
def test_list_rule_breaks_are_final_422_with_loops_message(loop, loop_sim, params, message):
    with pytest.raises(FinalError) as caught:
        list(loop.iter_returns(**params))
    assert (caught.value.status, caught.value.message) == (422, message)


def test_list_refuses_a_next_page_url_on_a_foreign_host():
    """The key must never go to another host: a page pointing elsewhere is refused, not followed."""
    foreign_hits = []
    foreign = Flask("foreign")
    foreign.add_url_rule("/<path:rest>", "any", lambda rest: foreign_hits.append(rest) or "[]")
    foreign_server = ServerThread(foreign).start()
    stub = Flask("stub")
    stub.add_url_rule("/api/v1/warehouse/return/list", "list", lambda: jsonify(
        {"returns": [{"id": 1}], "nextPageUrl": f"{foreign_server.url}/api/v1/warehouse/return/list?cursor=x",
         "previousPageUrl": None}))
    stub_server = ServerThread(stub).start()
    try:
        pages = LoopClient(stub_server.url, LOOP_KEY, timeout=TIMEOUT).iter_returns(**window())
        assert next(pages) == {"id": 1}
        with pytest.raises(FinalError, match="foreign host"):
            next(pages)
        assert foreign_hits == []
    finally:
        foreign_server.stop()
        stub_server.stop()


# --- actions -------------------------------------------------------------------------------------

def test_process_queues_with_additional_details_then_loop_closes_it(loop, loop_sim):
    ret = loop_sim.new_return()
    loop.process(str(ret["id"]), {"rlm_ra_number": "3105"})
    assert loop_sim.wait_state(ret["id"], "closed") == "closed"
    assert loop_sim.record(ret["id"])["process_data"] == {"rlm_ra_number": "3105"}


@pytest.mark.parametrize("action, state", [("flag", "review"), ("cancel", "cancelled"), ("close", "closed")])
def test_actions_answer_true_and_move_the_state(loop, loop_sim, action, state):
    ret = loop_sim.new_return()
    getattr(loop, action)(str(ret["id"]))
    assert loop_sim.record(ret["id"])["state"] == state


# §3.4: refusals come back as HTTP 200 with an error body; Loop's code (when it sends one) and message reach us.
REFUSALS = [
    ("closed", "process", "UNPROCESSABLE_RETURN", "Return is closed and therefore cannot be processed."),
    ("closed", "flag", "UNPROCESSABLE_RETURN", "Return is closed and therefore cannot be processed."),
    ("expired", "close", "UNPROCESSABLE_RETURN", "Return is expired and therefore cannot be processed."),
    ("review", "process", "UNPROCESSABLE_FLAGGED_RETURN", "Return is flagged and therefore cannot be processed."),
    ("cancelled", "process", None, "Return is cancelled and therefore cannot be processed."),
    ("cancelled", "close", None, "Return is cancelled and therefore cannot be processed."),
    ("review", "flag", None, "Return is review and therefore cannot be processed."),
    ("expired", "cancel", None, "Return is expired and cannot be processed."),
    ("review", "cancel", None, "Return is flagged and cannot be processed."),
]


@pytest.mark.parametrize("state, action, code, message", REFUSALS)
def test_http_200_refusal_is_a_final_error_with_loops_code(loop, loop_sim, state, action, code, message):
    ret = loop_sim.new_return()
    loop_sim.set_state(ret["id"], state)
    with pytest.raises(FinalError) as caught:
        getattr(loop, action)(str(ret["id"]))
    assert (caught.value.status, caught.value.code, caught.value.message) == (200, code, message)
    assert loop_sim.record(ret["id"])["state"] == state


def test_refusal_sent_as_422_is_the_same_final_error(loop, loop_sim):
    loop_sim.post("/config", {"refusal_status": 422})
    ret = loop_sim.new_return()
    loop_sim.set_state(ret["id"], "closed")
    with pytest.raises(FinalError) as caught:
        loop.process(str(ret["id"]))
    assert (caught.value.status, caught.value.code) == (422, "UNPROCESSABLE_RETURN")


def test_remove_items_removes_units_and_processes_the_rest(loop, loop_sim):
    ret = loop_sim.new_return(units=3)
    first = ret["line_items"][0]["line_item_id"]
    loop.remove_items(str(ret["id"]), [str(first)])
    record = loop_sim.record(ret["id"])
    assert [li["line_item_id"] for li in record["removed_line_items"]] == [first]
    assert loop_sim.wait_state(ret["id"], "closed") == "closed"


@pytest.mark.parametrize("ids, message", [
    ([], "The line item id field is required."),
    (["1"], "There are no line items that qualify for removal"),
    ("mixed", "Not all line items qualify for removal"),
])
def test_remove_items_refusals_are_final_422(loop, loop_sim, ids, message):
    ret = loop_sim.new_return(units=2)
    if ids == "mixed":
        ids = [str(ret["line_items"][0]["line_item_id"]), "1"]
    with pytest.raises(FinalError) as caught:
        loop.remove_items(str(ret["id"]), ids)
    assert (caught.value.status, caught.value.message) == (422, message)


# --- notes ---------------------------------------------------------------------------------------

def test_no_notes_is_an_empty_list_not_loops_422_false(loop, loop_sim):
    assert loop.get_notes(str(loop_sim.new_return()["id"])) == []


def test_note_is_created_and_read_back(loop, loop_sim):
    ret = loop_sim.new_return()
    loop.create_note(str(ret["id"]), "RLM RA 3105: missing 1 x CB11D10-BLUE-S")
    assert [n["content"] for n in loop.get_notes(str(ret["id"]))] == ["RLM RA 3105: missing 1 x CB11D10-BLUE-S"]


def test_long_note_is_cut_at_a_word_boundary_and_accepted(loop, loop_sim):
    ret = loop_sim.new_return()
    words = " ".join(f"discrepancy{i}" for i in range(40))  # ~550 characters
    loop.create_note(str(ret["id"]), words)
    [note] = loop.get_notes(str(ret["id"]))
    assert note["content"] == truncate_note(words) and len(note["content"]) <= 254
    assert words.startswith(note["content"].removesuffix("…") + " ")


# --- dispositioning ------------------------------------------------------------------------------

def _grades(line_item_ids):
    return [{"line_item_id": i, "description": "Received", "condition_category": "grade_a",
             "inspected_at": "2024-03-31 23:59:59"} for i in line_item_ids]


def test_grade_sends_at_most_20_items_per_call_and_returns_the_echo(loop, loop_sim, session):
    ret = loop_sim.new_return(units=25)
    items = _grades([li["line_item_id"] for li in ret["line_items"]])
    assert loop.grade(items) == items
    assert len([url for _, url in session.sent if url.endswith("/dispositioning/grade")]) == 2


def test_assess_returns_the_echo(loop, loop_sim):
    ret = loop_sim.new_return(units=1)
    items = [{"line_item_id": ret["line_items"][0]["line_item_id"], "disposition_outcome": "back_to_stock"}]
    assert loop.assess(items) == items


@pytest.mark.parametrize("change, status", [({"line_item_id": 1}, 403), ({"condition_category": "mint"}, 422)])
def test_grade_refusals_are_final(loop, loop_sim, change, status):
    ret = loop_sim.new_return(units=1)
    [item] = _grades([ret["line_items"][0]["line_item_id"]])
    with pytest.raises(FinalError) as caught:
        loop.grade([{**item, **change}])
    assert caught.value.status == status


# --- webhooks ------------------------------------------------------------------------------------

def test_ensure_webhooks_creates_active_ones_once_and_reactivates(loop, loop_sim):
    triggers = {"return": ["return.created", "return.updated"], "return.processing": ["return.processing.failed"]}
    assert len(loop.ensure_webhooks("https://example.com/hook", triggers)) == 3
    assert loop.ensure_webhooks("https://example.com/hook", triggers) == []
    hooks = loop.list_webhooks()
    assert {h["status"] for h in hooks} == {"active"} and len(hooks) == 3
    # Made inactive in Loop's admin: a PUT brings it back without creating a duplicate.
    requests.put(f"{loop_sim.url}/api/v1/webhooks/{hooks[0]['id']}", headers={"X-Authorization": LOOP_KEY},
                 json={**hooks[0], "status": "inactive"}, timeout=5)
    assert len(loop.ensure_webhooks("https://example.com/hook", triggers)) == 1
    assert len(loop.list_webhooks()) == 3 and {h["status"] for h in loop.list_webhooks()} == {"active"}


# --- auth, rate limit, faults --------------------------------------------------------------------

def test_bad_key_is_final_401_with_the_text_code_from_http_code(loop_sim):
    with pytest.raises(FinalError) as caught:
        LoopClient(loop_sim.url, "wrong-key", timeout=TIMEOUT).list_webhooks()
    assert (caught.value.status, caught.value.code, caught.value.message) == (401, "GEN-UNAUTHORIZED", "Unauthorized.")


@pytest.mark.parametrize("retry_after_header, expected", [(True, 60.0), (False, None)])
def test_429_is_retryable_with_retry_after_when_sent(loop, loop_sim, retry_after_header, expected):
    loop_sim.post("/config", {"rate_limit_per_minute": 2, "rate_limit_retry_after": retry_after_header})
    loop.list_webhooks()
    loop.list_webhooks()
    with pytest.raises(RetryableError) as caught:
        loop.list_webhooks()
    assert caught.value.status == 429
    if expected is None:
        assert caught.value.retry_after is None
    else:
        assert caught.value.retry_after == pytest.approx(expected, abs=2)


def test_503_on_a_read_is_resent_quickly_and_succeeds(loop, loop_sim):
    ret = loop_sim.new_return()
    loop_sim.fault(match={"path": "/warehouse/return/details"}, status=503, times=1)
    assert loop.get_return(str(ret["id"]))["id"] == ret["id"]


def test_5xx_on_an_action_is_retryable_and_not_resent(loop, loop_sim, session):
    ret = loop_sim.new_return()
    loop_sim.fault(match={"method": "POST", "path": "*/process"}, status=500, html=True, times=1)
    with pytest.raises(RetryableError) as caught:
        loop.process(str(ret["id"]))
    assert caught.value.status == 500
    assert len([url for _, url in session.sent if url.endswith("/process")]) == 1


def test_a_hang_past_the_read_timeout_is_retryable(loop_sim):
    client = LoopClient(loop_sim.url, LOOP_KEY, timeout=SHORT_TIMEOUT, read_retries=0)
    loop_sim.fault(match={"path": "/webhooks"}, timeout=True, times=1)
    with pytest.raises(RetryableError, match="ReadTimeout"):
        client.list_webhooks()
    assert SHORT_TIMEOUT[1] < HANG_S
