"""A token bucket in Redis, shared by every worker process that calls one Loop API key.

Loop allows 300 requests per minute per key; Celery's `rate_limit` is per worker, so it cannot
keep several processes together under that. The bucket refills continuously at `rate_per_s`
and holds at most `burst` tokens, so any 60-second window sees at most 60*rate + burst calls.
"""
from __future__ import annotations

import hashlib
import random
import time

import redis

from integration.errors import NotSent

# KEYS[1] bucket; ARGV rate/s, burst. Returns 0 when a token was taken, else seconds to wait.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


MAX_WAIT_S = 20.0  # longest a call blocks for a slot before handing the wait to Celery


class TokenBucket:
    def __init__(self, client: redis.Redis, name: str, per_minute: float, burst: int = 10,
                 max_wait_s: float = MAX_WAIT_S):
        self.client = client
        self.key = f"ratelimit:{name}"
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_wait_s = max_wait_s
        self._take = client.register_script(_TAKE)
        self.waited_s = 0.0  # total time this process spent waiting, for metrics

    def acquire(self) -> None:
        """Block until a token is ours; past `max_wait_s`, hand the wait to Celery's retry."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            wait = float(self._take(keys=[self.key], args=[self.rate, self.burst]))
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise NotSent("loop", "rate limit: waiting for a request slot", retry_after=wait)
            # A little jitter: processes that all waited for the same token do not all wake at
            # once, and the same one does not win every time (a slot starved for minutes).
            pause = wait * random.uniform(1.0, 1.25)
            time.sleep(pause)
            self.waited_s += pause


def bucket_name(system: str, api_key: str) -> str:
    """Keyed by API key (the unit Loop limits) without putting the key itself in Redis."""
    return f"{system}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"
