"""A counting semaphore in Redis with expiring holders: at most `cap` calls at once per name
(a merchant's RLM calls), shared by every process.

RLM publishes no limit, but one merchant's backlog must not occupy its ERP (or our slots) with
every call at once. A holder is a member of a sorted set scored by when it expires: one killed
mid-call (SIGKILL, lost node) frees its place after `ttl_s` without anyone releasing it. Full:
NoSlot, never a wait; the step is rescheduled.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from integration.errors import NoSlot

# KEYS[1] the set, KEYS[2] its turns; ARGV cap, ttl, holder. "0": a place taken; else the
# seconds until the caller's turn: refused callers are spaced by the time a place takes to free
# (the calls' average length over the cap), so a merchant's backlog comes back at the rate its
# calls end, not all at once.
_ENTER = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < cap then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 60)
  return "0"
end
local state = redis.call('HMGET', KEYS[2], 'avg', 'next')
local spacing = math.max(0.01, (tonumber(state[1]) or 1.0) / cap)
local wait = math.max(spacing, (tonumber(state[2]) or 0) - now)
redis.call('HSET', KEYS[2], 'next', now + wait + spacing)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl + wait) + 60)
return tostring(wait)
"""

# KEYS[1] the set, KEYS[2] its turns; ARGV holder, ttl. Leaves, and folds the call's length
# into the average that spaces the turns.
_LEAVE = """
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not expiry then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local took = math.max(0, now - (expiry - tonumber(ARGV[2])))
local avg = tonumber(redis.call('HGET', KEYS[2], 'avg'))
redis.call('HSET', KEYS[2], 'avg', avg and (0.8 * avg + 0.2 * took) or took)
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2])) + 60)
return 1
"""


class Semaphore:
    def __init__(self, client: redis.Redis, name: str, cap: int, ttl_s: float, system: str = "rlm"):
        self.client = client
        self.key = f"semaphore:{name}"
        self.turns_key = f"semaphore-turns:{name}"
        self.cap = cap
        self.ttl_s = ttl_s  # longer than any call can take (the client's timeouts and quick retries)
        self.system = system
        self._enter = client.register_script(_ENTER)
        self._leave = client.register_script(_LEAVE)

    def enter(self) -> tuple[str | None, float]:
        """(holder, 0) if a place was free (hand the holder to `leave`), else (None, seconds
        until this caller's turn)."""
        holder = uuid.uuid4().hex
        wait = float(self._enter(keys=[self.key, self.turns_key], args=[self.cap, self.ttl_s, holder]))
        return (holder, 0.0) if wait <= 0 else (None, wait)

    def try_enter(self) -> str | None:
        return self.enter()[0]

    def leave(self, holder: str) -> None:
        self._leave(keys=[self.key, self.turns_key], args=[holder, self.ttl_s])

    @contextmanager
    def held(self) -> Iterator[None]:
        """One place for the block; none free: NoSlot (nothing was sent) with the caller's turn."""
        holder, wait = self.enter()
        if holder is None:
            raise NoSlot(self.system, f"at most {self.cap} calls at once for this merchant",
                         retry_after=wait)
        try:
            yield
        finally:
            try:
                self.leave(holder)
            except redis.RedisError:
                pass  # it expires on its own after ttl_s
