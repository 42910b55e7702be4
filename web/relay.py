"""Publishes committed inbox rows to the broker from a background thread, several per message.

The inbox row committed before the 202 is the durable record (an outbox); the broker message
only says "handle these rows". Sending it from the request cost more CPU than everything else
the receiver does (docs/benchmarks.md), so a thread per process sends what accumulated in the
last few milliseconds as one message. A batch lost with its process (or refused by a broker
that is down) is not lost work: its rows stay `received` and the sweeper re-drives them.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, publish: Callable[[list[int]], None], *, linger_s: float = 0.02,
                 max_batch: int = 500) -> None:
        self._publish = publish
        self._linger_s = linger_s  # how long the first row of a batch waits for company
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def submit(self, event_id: int) -> None:
        self._ensure_thread()
        self._queue.put(event_id)

    def flush(self) -> None:
        """Send whatever is waiting, now (at exit; and for tests)."""
        while True:
            batch = self._take(block=False)
            if not batch:
                return
            self._send(batch)

    def _ensure_thread(self) -> None:
        # Started lazily and once per process: gunicorn forks workers after loading the app,
        # and a thread does not survive a fork.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                threading.Thread(target=self._run, name="inbox-relay", daemon=True).start()
                atexit.register(self.flush)
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            self._send(self._take(block=True))

    def _take(self, block: bool) -> list[int]:
        try:
            batch = [self._queue.get(block=block)]
        except queue.Empty:
            return []
        if block:
            # Sleep rather than wait on the queue: one wake-up per batch, not one per delivery
            # (each costs the request threads a GIL hand-over).
            time.sleep(self._linger_s)
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[int]) -> None:
        try:
            self._publish(batch)
        except Exception:  # broker down: the rows stay `received`; the sweeper re-drives them
            log.exception("inbox relay: could not publish %d event(s) (first id %s); the sweeper "
                          "will re-drive them", len(batch), batch[0])
