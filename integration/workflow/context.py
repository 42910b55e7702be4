"""Everything a workflow step needs, handed in rather than imported (no Celery here)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from redis import Redis, RedisError
from sqlalchemy.orm import Session, sessionmaker

from integration.infra.ratelimit import TokenBucket, bucket_name
from integration.infra.semaphore import Semaphore
from integration.loop.client import LoopClient
from integration.merchants import Merchant
from integration.rlm.client import JsonTransport, RlmClient
from integration.settings import Settings
from integration.store.models import utcnow

# enqueue(step_name, target_id): publish a task for a step; called only after a commit.
Enqueue = Callable[[str, object], None]
# enqueue_in(step_name, target_id, seconds): the same, delivered `seconds` from now.
EnqueueIn = Callable[[str, object, float], None]


@dataclass
class Context:
    settings: Settings
    merchants: dict[str, Merchant]
    sessions: sessionmaker[Session]
    enqueue: Enqueue
    now: Callable[[], datetime] = utcnow
    loop_limiter_for: Callable[[Merchant], object] | None = None
    # How many Loop actions wait in the broker for a rate-limit slot (None: unknown).
    loop_backlog: Callable[[], int | None] = lambda: None
    # None: delivered at once (the step then finds its wait not over and is rescheduled again).
    enqueue_in: EnqueueIn | None = None
    rlm_slots_for: Callable[[Merchant], Semaphore] | None = None
    _loop: dict[str, LoopClient] = field(default_factory=dict)
    _rlm: dict[str, RlmClient] = field(default_factory=dict)

    @classmethod
    def for_service(cls, settings: Settings, merchants: dict[str, Merchant], sessions: sessionmaker[Session],
                    send_task: Callable[..., object] | None, redis: Redis | None) -> Context:
        """The one way the service's processes (workers, web, CLI) build their Context: steps
        published by task name (the step table's), Loop's rate limit shared through Redis."""
        from integration.workflow.steps import BY_NAME, task_name  # the table imports the steps

        loop_queue = BY_NAME["act_in_loop"].queue

        def enqueue(step: str, target_id) -> None:
            if send_task is None:
                raise RuntimeError("this process does not publish tasks")
            send_task(task_name(step), [target_id])

        def enqueue_in(step: str, target_id, seconds: float) -> None:
            if send_task is None:
                raise RuntimeError("this process does not publish tasks")
            send_task(task_name(step), [target_id], countdown=max(0.0, seconds))

        def limiter(merchant: Merchant) -> TokenBucket:
            assert redis is not None
            return TokenBucket(redis, bucket_name("loop", merchant.loop_api_key),
                               settings.loop_requests_per_minute)

        def rlm_slots(merchant: Merchant) -> Semaphore:
            assert redis is not None
            connect, read = settings.rlm_timeout
            # Held per request (quick re-sends included): expire after the longest one can take.
            return Semaphore(redis, f"rlm:{merchant.name}", settings.rlm_max_concurrent,
                             ttl_s=3 * (connect + read) + 10)

        def loop_backlog() -> int | None:
            """Messages waiting on the Loop step's queue (the Redis transport keeps a queue as a list)."""
            try:
                return int(redis.llen(loop_queue)) if redis is not None else None
            except RedisError:
                return None

        return cls(settings=settings, merchants=merchants, sessions=sessions, enqueue=enqueue,
                   loop_limiter_for=limiter if redis is not None else None, loop_backlog=loop_backlog,
                   enqueue_in=enqueue_in, rlm_slots_for=rlm_slots if redis is not None else None)

    def merchant(self, name: str) -> Merchant:
        return self.merchants[name]

    def loop(self, merchant: Merchant) -> LoopClient:
        client = self._loop.get(merchant.name)
        if client is None:
            limiter = self.loop_limiter_for(merchant) if self.loop_limiter_for else None
            client = LoopClient(merchant.loop_base_url, merchant.loop_api_key,
                                merchant.loop_api_version, limiter=limiter,
                                timeout=self.settings.loop_timeout)
            self._loop[merchant.name] = client
        return client

    def rlm(self, merchant: Merchant) -> RlmClient:
        client = self._rlm.get(merchant.name)
        if client is None:
            transport = JsonTransport(merchant.rlm_base_url, merchant.rlm_company,
                                      merchant.rlm_username, merchant.rlm_key,
                                      timeout=self.settings.rlm_timeout,
                                      slots=self.rlm_slots_for(merchant) if self.rlm_slots_for else None)
            client = self._rlm[merchant.name] = RlmClient(transport)
        return client

    def loop_turn(self, merchant_name: str, n: int) -> float:
        """Book the merchant's next turn for a step of `n` Loop calls: the seconds until it (0:
        now). Without a shared bucket, or with Redis unreachable: 0, and the step, when it
        runs, finds out for itself whether a token is there."""
        limiter = self.loop(self.merchant(merchant_name)).limiter
        if limiter is None or n <= 0:
            return 0.0
        try:
            return float(limiter.turn(n))
        except RedisError:
            return 0.0

    @contextmanager
    def loop_calls(self, merchant_name: str, n: int) -> Iterator[None]:
        """The Loop tokens for a step's `n` calls, taken at once before it starts (NoSlot if the
        merchant has not that many now); what the step's path did not use goes back after."""
        limiter = self.loop(self.merchant(merchant_name)).limiter
        if limiter is None or n <= 0:
            yield
            return
        limiter.prepay(n)
        try:
            yield
        finally:
            limiter.give_back()
