"""A periodic job fanned out into one task per merchant.

The beat's job only publishes: one message per merchant that has none waiting yet, so each
merchant's run takes its own worker slot and a slow RLM (or an exhausted Loop limit) delays that
merchant alone. A `pending` marker per merchant keeps a backed-up queue from growing by one
message per merchant each interval; it expires, so a lost message costs a few intervals at most.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import redis

from integration.workflow.steps import TASK_QUEUES


def pending_key(job: str, merchant: str) -> str:
    return f"pending:{job}:{merchant}"


def pending_ttl_s(interval_s: float) -> int:
    """How long a merchant's unstarted run blocks the next: a few intervals, at least a minute."""
    return max(60, math.ceil(3 * interval_s))


def fan_out(client: redis.Redis, job: str, merchants: Iterable[str], interval_s: float,
            send: Callable[[str], object]) -> int:
    """Send `send(merchant)` for each merchant with no run of `job` waiting; how many were sent.
    One round trip to Redis for all the markers, however many merchants."""
    names = list(merchants)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.set(pending_key(job, name), 1, nx=True, ex=pending_ttl_s(interval_s))
    sent = 0
    for name, fresh in zip(names, pipe.execute(), strict=True):
        if fresh:
            send(name)
            sent += 1
    return sent


@contextmanager
def publisher_for(app, task: str) -> Iterator[Callable[[str], object]]:
    """`send(merchant)` for `fan_out`: one producer for the whole fan-out, the queue declared
    once (Celery has kombu check its declaration on every publish, a sixth of a publish's CPU),
    and the messages pushed to Redis in pipelined batches (kombu's `Producer.batch`) rather
    than a round trip each. Should the fan-out fail half-way, what was not flushed is dropped:
    those merchants' markers expire and a later interval sends them (as for a lost message)."""
    with app.producer_or_acquire() as producer, producer.batch():
        producer.maybe_declare(app.amqp.queues[TASK_QUEUES[task]])
        yield lambda merchant: app.send_task(task, args=[merchant], producer=producer, declare=[])


def started(client: redis.Redis, job: str, merchant: str) -> None:
    """The run left the queue: the next interval may queue the next one (an overlap with this
    one is stopped by the merchant's lock)."""
    client.delete(pending_key(job, merchant))
