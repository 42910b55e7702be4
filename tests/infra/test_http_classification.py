"""Retry classification without a network: hand-built responses and a scripted session."""
from __future__ import annotations

import email.utils
import json
import time

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from integration.errors import FinalError, NotFound, RetryableError
from integration.infra.http import classify, parse_retry_after, send
from integration.loop.client import NOTE_MAX, LoopClient, describe_error, truncate_note
from integration.rlm.client import JsonTransport, RlmClient


def response(status: int, body: object = None, *, raw: bytes | None = None, headers: dict | None = None):
    made = requests.Response()
    made.status_code = status
    made._content = raw if raw is not None else json.dumps(body).encode()
    made.headers.update(headers or {})
    return made


class ScriptedSession(requests.Session):
    """Answers each request with the next scripted response, or raises the scripted exception."""

    def __init__(self, *script):
        super().__init__()
        self.script = list(script)
        self.calls: list[dict] = []

    def request(self, method, url, **kwargs):
        self.calls.append({"method": method, "url": url, **kwargs})
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def send_one(session, retries=0, **kwargs):
    return send(session, "loop", "GET", "https://api.example.com/x?secret=1", timeout=(1, 2),
                retries=retries, describe=describe_error, **kwargs)


# --- status codes --------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 520])
def test_retryable_statuses(status):
    assert isinstance(classify("loop", response(status, {}), describe_error), RetryableError)


@pytest.mark.parametrize("status, kind", [(400, FinalError), (401, FinalError), (403, FinalError),
                                          (404, NotFound), (405, FinalError), (409, FinalError),
                                          (422, FinalError)])
def test_final_statuses(status, kind):
    error = classify("loop", response(status, {}), describe_error)
    assert type(error) is kind and not isinstance(error, RetryableError)


def test_loops_401_body_gives_the_text_code():
    body = {"error": {"code": "401", "http_code": "GEN-UNAUTHORIZED", "message": "Unauthorized."}}
    error = classify("loop", response(401, body), describe_error)
    assert (error.code, error.message) == ("GEN-UNAUTHORIZED", "Unauthorized.")


def test_html_error_page_is_described_by_its_status():
    error = classify("rlm", response(503, raw=b"<html><body>Apache Tomcat</body></html>"), describe_error)
    assert isinstance(error, RetryableError) and error.message == "HTTP 503"


@pytest.mark.parametrize("body, message, code", [
    ({"errors": {"message": "Return is closed and therefore cannot be processed.", "code": "UNPROCESSABLE_RETURN"}},
     "Return is closed and therefore cannot be processed.", "UNPROCESSABLE_RETURN"),
    ({"message": "Return is cancelled and therefore cannot be processed."},
     "Return is cancelled and therefore cannot be processed.", None),
    ({"content": "Return is expired and cannot be processed."}, "Return is expired and cannot be processed.", None),
    ({"message": "The page size may not be greater than 750.", "errors": {"pageSize": ["too big"]}},
     "The page size may not be greater than 750.", None),
    ({"errors": {"code": "NOT_FOUND"}}, "NOT_FOUND", "NOT_FOUND"),
    ({"error": {"message": "The line item id field is required."}}, "The line item id field is required.", None),
])
def test_every_loop_error_body_shape_is_described(body, message, code):
    assert describe_error(body) == (message, code)


# --- Retry-After ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("120", 120.0), ("1.5", 1.5),
                                             ("-3", 0.0), ("soon", None)])
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert parse_retry_after(in_a_minute) == pytest.approx(60, abs=2)


def test_429_carries_retry_after():
    error = classify("loop", response(429, {"message": "Too Many Attempts."}, headers={"Retry-After": "17"}),
                     describe_error)
    assert isinstance(error, RetryableError) and error.retry_after == 17.0


# --- transport failures and quick re-sends -------------------------------------------------------

@pytest.mark.parametrize("exc", [requests.ConnectionError(), requests.ConnectTimeout(), requests.ReadTimeout(),
                                 requests.exceptions.ChunkedEncodingError()])
def test_transport_failures_are_retryable_and_name_no_query(exc):
    with pytest.raises(RetryableError) as caught:
        send_one(ScriptedSession(exc))
    assert "secret" not in str(caught.value)


def test_a_malformed_url_is_final():
    with pytest.raises(FinalError):
        send_one(ScriptedSession(requests.exceptions.InvalidURL()))


def test_every_request_carries_the_timeout():
    session = ScriptedSession(response(200, {}))
    send_one(session)
    assert session.calls[0]["timeout"] == (1, 2)


def test_5xx_is_resent_quickly_when_allowed():
    session = ScriptedSession(response(503, raw=b"<html/>"), requests.ReadTimeout(), response(200, {"ok": 1}))
    assert send_one(session, retries=2).json() == {"ok": 1}
    assert len(session.calls) == 3


def test_no_resend_without_retries():
    session = ScriptedSession(response(503, {}), response(200, {}))
    with pytest.raises(RetryableError):
        send_one(session)
    assert len(session.calls) == 1


def test_a_long_retry_after_is_left_to_the_task():
    session = ScriptedSession(response(503, {}, headers={"Retry-After": "30"}), response(200, {}))
    with pytest.raises(RetryableError) as caught:
        send_one(session, retries=2)
    assert caught.value.retry_after == 30.0 and len(session.calls) == 1


def test_429_is_not_resent_quickly():
    session = ScriptedSession(response(429, {}), response(200, {}))
    assert send_one(session, retries=2).status_code == 429  # the caller classifies it; the task waits it out
    assert len(session.calls) == 1


def test_the_rate_limiter_runs_before_every_attempt():
    taken = []
    session = ScriptedSession(response(502, {}), response(200, {}))
    send_one(session, retries=1, before=lambda: taken.append(1))
    assert len(taken) == 2


# --- Loop: HTTP 200 is not success ---------------------------------------------------------------

def loop_with(*script) -> LoopClient:
    return LoopClient("https://api.example.com", "key", session=ScriptedSession(*script))


@pytest.mark.parametrize("raw", [b'"true"', b"true"])
def test_loop_action_succeeds_only_on_true(raw):
    loop_with(response(200, raw=raw)).flag("1")


@pytest.mark.parametrize("body", ["false", {"errors": {"message": "no", "code": "UNPROCESSABLE_RETURN"}}, {}])
def test_loop_action_with_any_other_json_body_is_final(body):
    with pytest.raises(FinalError) as caught:
        loop_with(response(200, body)).close("1")
    assert caught.value.status == 200


def test_loop_answer_that_is_not_json_is_retryable():
    with pytest.raises(RetryableError):
        loop_with(response(200, raw=b"<html>maintenance</html>")).get_return("1")


def test_loop_next_page_url_on_plain_http_is_refused():
    page = {"returns": [], "nextPageUrl": "http://api.example.com/api/v1/warehouse/return/list?cursor=x"}
    with pytest.raises(FinalError, match="foreign host"):
        list(loop_with(response(200, page)).iter_returns(start="a", end="b"))


# --- RLM: code 0 is failure ----------------------------------------------------------------------

def rlm_with(*script) -> RlmClient:
    return RlmClient(JsonTransport("https://rlm.example.com", 90, "u", "k", session=ScriptedSession(*script)))


def test_rlm_code_0_under_200_is_final():
    with pytest.raises(FinalError) as caught:
        rlm_with(response(200, {"code": 0, "description": "Invalid Company"})).warehouses()
    assert (caught.value.status, caught.value.message) == (200, "Invalid Company")


def test_rlm_answer_that_is_not_json_is_retryable():
    with pytest.raises(RetryableError):
        rlm_with(response(200, raw=b"<html/>")).get_ra(1)


# --- notes ---------------------------------------------------------------------------------------

def test_note_that_fits_is_unchanged():
    assert truncate_note("x" * NOTE_MAX) == "x" * NOTE_MAX


def test_long_note_is_cut_before_the_word_that_does_not_fit():
    text = "word " * 50 + "tail"  # 254 characters
    longer = text + "s"
    assert truncate_note(text) == text
    assert truncate_note(longer) == ("word " * 50).rstrip() + "…"


def test_one_giant_word_is_cut_hard():
    assert truncate_note("x" * 300) == "x" * (NOTE_MAX - 1) + "…"


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=400))
def test_note_is_short_enough_and_never_ends_mid_word(text):
    note = truncate_note(text)
    assert len(note) <= NOTE_MAX
    if note.endswith("…") and note != text.strip():
        kept = note[:-1]
        rest = text.strip()[len(kept):]
        assert text.strip().startswith(kept)
        assert rest[:1].isspace() or (" " not in kept and "\n" not in kept)
