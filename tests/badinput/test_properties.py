"""Random bodies, signed and unsigned, and random mutations of a valid `return.created`: the
answer is always a status the README defines (never a 500), and the database agrees with it:
a 202 is exactly one new row, queued, and whole once the worker has read it (never an error
out of the worker's first step, whatever the body)."""
from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import undefer

from integration.loop.signature import sign
from integration.store.models import WebhookEvent
from tests.conftest import SECRET, wire

from .conftest import CREATED, SIGNED, assert_whole, post

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    # The app and database are per test, not per example: each example compares
                    # the database before and after its own request.
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text as hostile as JSON allows: any code point, lone surrogates and NUL included.
characters = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from("\x00/\\\"\n")
text = st.text(characters, max_size=20)
long_text = st.builds(lambda c, n: c * n, characters, st.integers(1_000, 100_000))
scalars = (st.none() | st.booleans() | st.integers() | st.integers(2**63, 2**300)
           | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)


def encoded(value, ascii_only: bool) -> bytes:
    # Raw UTF-8 may carry lone surrogates (invalid UTF-8): the receiver must refuse it cleanly.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


class Ledger:
    """What the receiver stored and queued before this example, to compare after it."""

    def __init__(self, sessions, enqueued, handle):
        self.sessions, self.enqueued, self.handle = sessions, enqueued, handle
        self.last_id, self.queued = 0, len(enqueued)
        self.new_rows()

    def new_rows(self) -> list[WebhookEvent]:
        with self.sessions() as s:
            rows = list(s.query(WebhookEvent).options(undefer(WebhookEvent.raw_body))
                        .filter(WebhookEvent.id > self.last_id).order_by(WebhookEvent.id))
        self.last_id = rows[-1].id if rows else self.last_id
        return rows

    def new_enqueued(self) -> list[int]:
        new, self.queued = self.enqueued[self.queued:], len(self.enqueued)
        return new

    def check(self, response, allowed: set[int]) -> None:
        status = response.status_code
        queued = self.new_enqueued()
        if queued:
            self.handle(*queued)  # the worker reads what was stored
        rows = self.new_rows()
        if currently_in_test_context():  # --hypothesis-show-statistics: is every branch reached?
            event(f"status {status}")
        assert status in allowed, response.get_data(as_text=True)[:300]
        for row in rows:
            assert_whole(row)
        if status == 202:
            assert len(rows) == 1 and queued == [rows[0].id]
            if currently_in_test_context():
                event(f"read as {rows[0].status}")
            assert "jane@example.com" not in json.dumps(rows[0].payload)
        else:
            assert rows == [] and queued == []


@PROPERTY
@given(value=json_values, ascii_only=st.booleans(), secret=st.sampled_from([SECRET, "old-secret"]))
def test_random_json_signed(client, sessions, enqueued, handle_stored, value, ascii_only, secret):
    ledger = Ledger(sessions, enqueued, handle_stored)
    body = encoded(value, ascii_only)
    response = post(client, body, signature=sign(secret, body))
    ledger.check(response, {202, 200})


@PROPERTY
@given(body=st.binary(max_size=2_000))
def test_random_bytes_signed(client, sessions, enqueued, handle_stored, body):
    ledger = Ledger(sessions, enqueued, handle_stored)
    ledger.check(post(client, body), {202, 200})


@PROPERTY
@given(body=st.binary(max_size=500) | json_values.map(lambda v: encoded(v, True)),
       signature=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60))
def test_random_bodies_without_a_valid_signature_are_always_401(client, sessions, enqueued, handle_stored,
                                                                body,
                                                                signature):
    ledger = Ledger(sessions, enqueued, handle_stored)
    ledger.check(post(client, body, signature=signature), {401})


# --- random mutations of a valid return.created ------------------------------------------------
def paths(value, prefix=()) -> list[tuple]:
    """Every key path in a JSON value: ("address", "zip"), ("line_items", 0, "sku"), ..."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        found.append(prefix + (key,))
        found += paths(item, prefix + (key,))
    return found


PATHS = paths(CREATED)
# Unicode and very long text keep many fields valid (so 202s are common); other JSON values
# and drops mostly make the event unusable.
mutations = st.tuples(st.sampled_from(PATHS), st.sampled_from(["drop", "set"]),
                      text | long_text | json_values | st.sampled_from(["", " ", None, 0, [], {}]))


def _holds(container, key) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and key < len(container)


def mutate(event: dict, changes) -> dict:
    """Apply (path, drop|set, value) changes; a path an earlier change broke is skipped."""
    event = copy.deepcopy(event)
    for path, action, value in changes:
        parent = event
        for key in path[:-1]:
            parent = parent[key] if _holds(parent, key) else None
        key = path[-1]
        if action == "set" and (isinstance(parent, dict) or _holds(parent, key)):
            parent[key] = value
        elif action == "drop" and _holds(parent, key):
            del parent[key]
    return event


@PROPERTY
@given(changes=st.lists(mutations, min_size=1, max_size=4), signed=st.sampled_from([True] * 4 + [False]))
def test_random_mutations_of_a_valid_return(client, sessions, enqueued, handle_stored, changes, signed):
    ledger = Ledger(sessions, enqueued, handle_stored)
    body = wire(mutate(CREATED, changes))
    response = post(client, body, signature=SIGNED if signed else None)
    # Four 100k strings can exceed the 1 MiB cap: 413 is then the defined answer.
    ledger.check(response, {202, 200, 413} if signed else {401, 413})


def test_the_unmutated_return_is_accepted(client, sessions, enqueued, handle_stored):
    """The mutation test starts from a valid event: otherwise it would only ever test `invalid`."""
    ledger = Ledger(sessions, enqueued, handle_stored)
    response = post(client, wire(mutate(CREATED, [])))
    ledger.check(response, {202})
    with sessions() as s:
        assert s.get(WebhookEvent, ledger.last_id).status == "done"
