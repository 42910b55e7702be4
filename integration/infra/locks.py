"""A short Redis lock so a periodic job never runs twice at once (beat + a redelivery)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def single_run(client: redis.Redis, name: str, timeout: float) -> Iterator[bool]:
    """Yield True if this run holds the lock `lock:<name>`, False if another run does.

    `timeout` bounds how long a run killed mid-way (SIGKILL, lost node) blocks the next ones,
    so it is short. Two runs overlapping after it expires are safe, only wasteful: receipts are
    deduplicated on their number and every step re-reads state. A run that overran its lock
    leaves alone whatever lock a later run took meanwhile.
    """
    lock = client.lock(f"lock:{name}", timeout=timeout)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # it expired: the job overran its lock timeout
