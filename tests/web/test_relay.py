"""The receiver's relay: every stored row reaches the broker, several per message, and a broker
refusal neither loses the thread nor stops later rows."""
from __future__ import annotations

import threading
import time

from web.relay import Relay


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_every_row_is_published_exactly_once_in_batches():
    published: list[list[int]] = []
    lock = threading.Lock()

    def publish(batch):
        with lock:
            published.append(list(batch))

    relay = Relay(publish, linger_s=0.05)
    submitters = [threading.Thread(target=lambda base=base: [relay.submit(base + i) for i in range(250)])
                  for base in (0, 1000, 2000, 3000)]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join()
    _wait_for(lambda: sum(map(len, published)) >= 1000)
    time.sleep(0.1)
    ids = [i for batch in published for i in batch]
    assert sorted(ids) == sorted(base + i for base in (0, 1000, 2000, 3000) for i in range(250))
    assert len(published) < 100  # batched: far fewer messages than rows


def test_a_lone_row_is_sent_within_the_linger_time():
    published = []
    relay = Relay(published.append, linger_s=0.02)
    start = time.monotonic()
    relay.submit(7)
    _wait_for(lambda: published)
    assert published == [[7]]
    assert time.monotonic() - start < 1.0


def test_a_broker_refusal_is_logged_and_later_rows_still_go(caplog):
    published, calls = [], []

    def publish(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise ConnectionError("broker down")
        published.append(batch)

    relay = Relay(publish, linger_s=0.0)
    relay.submit(1)
    _wait_for(lambda: calls)
    relay.submit(2)
    _wait_for(lambda: published)
    assert published == [[2]]
    assert "could not publish 1 event(s) (first id 1)" in caplog.text
    assert "sweeper" in caplog.text


def test_flush_sends_what_is_waiting_without_the_thread():
    published = []
    relay = Relay(published.append, max_batch=3)
    relay._pid = -1  # pretend this process's thread is gone (as at interpreter exit)
    for i in range(7):
        relay._queue.put(i)
    relay.flush()
    assert published == [[0, 1, 2], [3, 4, 5], [6]]
