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

# KEYS[1] the set; ARGV cap, ttl, holder. 1: a place taken; 0: full.
_ENTER = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
return 1
"""

RETRY_S = 1.0  # a full semaphore frees as soon as a call ends: look again shortly


class Semaphore:
    def __init__(self, client: redis.Redis, name: str, cap: int, ttl_s: float, system: str = "rlm"):
        self.client = client
        self.key = f"semaphore:{name}"
        self.cap = cap
        self.ttl_s = ttl_s  # longer than any call can take (the client's timeouts and quick retries)
        self.system = system
        self._enter = client.register_script(_ENTER)

    def try_enter(self) -> str | None:
        """A holder id if a place was free (hand it to `leave`), else None."""
        holder = uuid.uuid4().hex
        taken = self._enter(keys=[self.key], args=[self.cap, self.ttl_s, holder])
        return holder if int(taken) else None

    def leave(self, holder: str) -> None:
        self.client.zrem(self.key, holder)

    @contextmanager
    def held(self) -> Iterator[None]:
        """One place for the block; none free: NoSlot (nothing was sent)."""
        holder = self.try_enter()
        if holder is None:
            raise NoSlot(self.system, f"at most {self.cap} calls at once for this merchant",
                         retry_after=RETRY_S)
        try:
            yield
        finally:
            try:
                self.leave(holder)
            except redis.RedisError:
                pass  # it expires on its own after ttl_s
