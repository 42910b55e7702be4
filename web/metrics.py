"""GET /metrics for Prometheus (Bearer ADMIN_TOKEN, like the API).

Everything is computed at scrape time from shared state, so any web process answers for the
whole service: gauges from the database (returns per state, the inbox) and the broker (queue
depths); counters and task durations from the Redis hashes the workers write
(workers.observability.MetricStore).
"""
from __future__ import annotations

import hmac
from datetime import UTC, datetime

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from sqlalchemy import func, select

from integration.infra import redis_pool
from integration.store.models import InboxStatus, Return, WebhookEvent
from workers import runtime
from workers.names import QUEUES
from workers.observability import MetricStore

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        return jsonify({"error": "metrics disabled: set ADMIN_TOKEN"}), 403
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return jsonify({"error": "missing or invalid bearer token"}), 401
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(current_app.config["SESSIONS"], _redis()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _redis() -> redis.Redis:
    """The process's shared client (integration.infra.redis_pool), as /healthz and the relay use."""
    return redis_pool.client(current_app.config.get("REDIS_URL") or runtime.redis_url())


class _Collector:
    def __init__(self, sessions, client: redis.Redis):
        self.sessions = sessions
        self.client = client

    def collect(self):
        yield from self._database()
        yield from self._broker()

    def _database(self):
        returns = GaugeMetricFamily("rlm_loop_returns", "Returns by merchant and lifecycle state",
                                    labels=["merchant", "state"])
        events = GaugeMetricFamily("rlm_loop_inbox_events", "Stored Loop webhooks by status",
                                   labels=["status"])
        lag = GaugeMetricFamily("rlm_loop_inbox_lag_seconds",
                                "Age of the oldest webhook still waiting to be handled (0: none)")
        with self.sessions() as s:
            for merchant, state, n in s.execute(select(Return.merchant, Return.state, func.count())
                                                .group_by(Return.merchant, Return.state)):
                returns.add_metric([merchant, state], n)
            for status, n in s.execute(select(WebhookEvent.status, func.count())
                                       .group_by(WebhookEvent.status)):
                events.add_metric([status], n)
            oldest = s.scalar(select(func.min(WebhookEvent.received_at))
                              .where(WebhookEvent.status == InboxStatus.RECEIVED))
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)  # SQLite hands back naive UTC
        lag.add_metric([], (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)
        yield from (returns, events, lag)

    def _broker(self):
        up = GaugeMetricFamily("rlm_loop_broker_up", "Whether the broker answered this scrape")
        try:
            stored = MetricStore(self.client).read()
            depths = {q: self.client.llen(q) for q in QUEUES}
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        queued = GaugeMetricFamily("rlm_loop_queue_messages", "Tasks waiting in each queue",
                                   labels=["queue"])
        for queue, n in depths.items():
            queued.add_metric([queue], n)
        durations = HistogramMetricFamily("rlm_loop_task_duration_seconds",
                                          "Celery task run time, by task and outcome",
                                          labels=["task", "state"])
        for (task, state), h in sorted(stored["tasks"].items()):
            durations.add_metric([task, state], buckets=h["buckets"], sum_value=h["sum"])
        errors = CounterMetricFamily("rlm_loop_api_errors", "Error answers (HTTP 4xx/5xx) from Loop "
                                     "and RLM, by system and status code", labels=["system", "code"])
        for (system, code), n in sorted(stored["api_errors"].items()):
            errors.add_metric([system, code], n)
        waits = CounterMetricFamily("rlm_loop_ratelimit_wait_seconds",
                                    "Time tasks spent waiting for a rate-limit slot", labels=["system"])
        for system, seconds in sorted({"loop": 0.0, **stored["waits"]}.items()):
            waits.add_metric([system], seconds)
        yield from (up, queued, durations, errors, waits)
