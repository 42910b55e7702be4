"""A token bucket in Redis, shared by every worker process that calls one Loop API key.

Loop allows 300 requests per minute per key; Celery's `rate_limit` is per worker, so it cannot
keep several processes together under that. The bucket refills continuously at `rate_per_s`
and holds at most `burst` tokens, so any 60-second window sees at most 60*rate + burst calls.

Nothing here sleeps: a caller without a token is told when to come back (NoSlot), so a worker
slot is never held by a merchant that cannot act; the step is rescheduled instead
(workflow/runner.py `defer_step`). Refused callers are handed out successive times (`next`), so
a backlog comes back spread at the bucket's rate instead of all at once.

Before a step is even published, its caller can book a turn (`turn`): the time the bucket's rate
lets it through, counting every turn booked before it. A merchant's burst is then published at
the rate its bucket drains, so it never fills the queue other merchants' steps wait in.
"""
from __future__ import annotations

import hashlib

import redis

from integration.errors import NoSlot

# KEYS[1] bucket; ARGV rate/s, burst, n. Returns 0 when n tokens were taken, else the seconds
# until this caller should come back: its turn after the callers already told to wait.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) or 1
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'next', 'turn')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local nxt = tonumber(state[3]) or 0
local turn = tonumber(state[4]) or 0
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  -- No reservation (a refusal takes nothing); only a hint that spaces the refused callers.
  wait = math.max((n - tokens) / rate, nxt - now)
  nxt = now + wait + n / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'next', nxt)
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(burst / rate, nxt - now, turn - now)) + 60)
return tostring(wait)
"""

# KEYS[1] bucket; ARGV rate/s, burst, n. Books the next turn for n requests at the bucket's rate
# (GCRA: `turn` is when the turns booked so far will have drained; up to `burst` tokens' worth
# may go at once) and returns the seconds until it, 0 for now. Takes no token: the step takes
# its own when it runs.
_TURN = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) or 1
local state = redis.call('HMGET', KEYS[1], 'turn', 'next')
local turn = math.max(tonumber(state[1]) or 0, now) + n / rate
local nxt = tonumber(state[2]) or 0
redis.call('HSET', KEYS[1], 'turn', turn)
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(burst / rate, nxt - now, turn - now)) + 60)
return tostring(math.max(0, turn - burst / rate - now))
"""

# KEYS[1] bucket; ARGV burst, n: tokens taken ahead and not used go back (capped at the burst).
_GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then
  redis.call('HSET', KEYS[1], 'tokens', math.min(tonumber(ARGV[1]), tokens + tonumber(ARGV[2])))
end
return 0
"""

# Kept for the Loop step's settle time (how long a claimed call may take before we conclude it
# never left): callers no longer wait for a token at all.
MAX_WAIT_S = 20.0


class TokenBucket:
    def __init__(self, client: redis.Redis, name: str, per_minute: float, burst: int = 10):
        self.client = client
        self.key = f"ratelimit:{name}"
        self.rate = per_minute / 60.0
        self.burst = burst
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        self._turn = client.register_script(_TURN)
        self._prepaid = 0  # tokens this process took ahead for the calls of one step
        self.waited_s = 0.0  # total wait handed back to refused calls in this process, for metrics

    def try_acquire(self, n: int = 1) -> float:
        """Take `n` tokens now and answer 0, or take nothing and answer the seconds to wait."""
        n = max(1, min(n, self.burst))
        return float(self._take(keys=[self.key], args=[self.rate, self.burst, n]))

    def turn(self, n: int = 1) -> float:
        """Book the next turn for a step of `n` requests: the seconds until it (0: now)."""
        n = max(1, min(n, self.burst))
        return float(self._turn(keys=[self.key], args=[self.rate, self.burst, n]))

    def acquire(self) -> None:
        """A token for one request, from those taken ahead or from the bucket; none: NoSlot
        with the wait (never a sleep: the caller's step is rescheduled)."""
        if self._prepaid > 0:
            self._prepaid -= 1
            return
        self._refuse_unless_taken(1)

    def prepay(self, n: int) -> None:
        """Take the tokens a whole step needs at once, so it is not refused half-way (after a
        read, before the action), which would waste the read and lose its turn."""
        self._refuse_unless_taken(n)
        self._prepaid += max(1, min(n, self.burst))

    def give_back(self) -> None:
        """Return what `prepay` took and the step did not use (its path needed fewer calls)."""
        unused, self._prepaid = self._prepaid, 0
        if unused > 0:
            self._give_back(keys=[self.key], args=[self.burst, unused])

    def _refuse_unless_taken(self, n: int) -> None:
        wait = self.try_acquire(n)
        if wait > 0:
            self.waited_s += wait
            raise NoSlot("loop", "rate limit: no request slot for this merchant now", retry_after=wait)


def bucket_name(system: str, api_key: str) -> str:
    """Keyed by API key (the unit Loop limits) without putting the key itself in Redis."""
    return f"{system}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"
