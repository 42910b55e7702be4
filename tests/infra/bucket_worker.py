"""A worker process for the rate-limit test, in its own module so a spawned child imports little."""
from __future__ import annotations

import time

import redis

from integration.infra.ratelimit import TokenBucket

HAMMER_S = 3.0


def hammer(url: str, name: str, per_minute: float, burst: int, ready, out) -> None:
    """Take tokens as fast as the bucket allows for HAMMER_S; report when each came."""
    bucket = TokenBucket(redis.Redis.from_url(url), name, per_minute, burst=burst)
    ready.wait(timeout=30)  # all start together; a sibling that never comes breaks it
    stop_at = time.time() + HAMMER_S
    taken = []
    while True:
        wait = bucket.try_acquire()
        if wait > 0:  # the bucket never sleeps for its callers: this test process does
            time.sleep(min(wait, 0.05))
            continue
        if time.time() >= stop_at:
            break
        taken.append(time.time())
    out.put(taken)
