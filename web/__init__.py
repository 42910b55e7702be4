"""Flask app factory: the Loop webhook receiver, the operator API and pages, health checks
and metrics."""
from __future__ import annotations

import os

from flask import Flask, current_app

from integration.infra import logs, redis_pool, redis_tls
from integration.production import refuse_to_run_wrong
from workers import runtime
from workers.error_reporting import init_error_reporting

from .relay import Relay


def create_app(test_config: dict | None = None) -> Flask:
    """`test_config` may supply SESSIONS, MERCHANTS, ADMIN_TOKEN, OPERATOR_TOKENS (name -> token),
    ENQUEUE_EVENT, ENQUEUE_STEP, REDIS_URL."""
    app = Flask(__name__)
    given = test_config or {}
    if not redis_pool.role():
        redis_pool.configure("web")  # names its Redis and database connections
    settings = given.get("SETTINGS") or runtime.settings()
    # Before anything is opened or started (a SQLite file, an embedded Valkey).
    refuse_to_run_wrong(settings, lambda: given.get("MERCHANTS") or runtime.merchants(),
                        admin_token=given.get("ADMIN_TOKEN"))
    if settings.redis_url:
        redis_tls.ssl_options(settings.redis_url)  # a bad REDIS_SSL_CERT_REQS stops us here, not later
    if not given.get("TESTING"):
        logs.configure()
    app.config.update(
        MAX_CONTENT_LENGTH=settings.webhook_max_bytes,
        SETTINGS=settings,
        ADMIN_TOKEN=settings.admin_token,
        OPERATOR_TOKENS=dict(settings.operator_tokens),
    )
    app.config.update(given)
    app.config.setdefault("MERCHANTS", given.get("MERCHANTS") or runtime.merchants())
    if not given.get("MERCHANTS"):
        app.before_request(_current_merchants)  # a changed merchants table, without a restart
    init_error_reporting("web", settings, app.config["MERCHANTS"])  # only with SENTRY_DSN
    if "SESSIONS" not in given:
        app.config["SESSIONS"] = runtime.sessions()
    if "ENQUEUE_EVENT" not in given:
        app.config["ENQUEUE_EVENT"] = _RELAY.submit
    if "ENQUEUE_STEP" not in given:
        app.config["ENQUEUE_STEP"] = _celery_enqueue_step
    if "REDIS_URL" not in given:
        app.config["REDIS_URL"] = None  # resolved on first use (embedded server if unset)

    from .api import bp as api_bp
    from .health import bp as health_bp
    from .metrics import bp as metrics_bp
    from .pages import bp as pages_bp
    from .webhooks import bp as webhooks_bp

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(metrics_bp)
    if os.environ.get("BENCH_BASELINE") == "1":  # `make bench` only: the do-nothing baseline
        from .baseline import bp as baseline_bp

        app.register_blueprint(baseline_bp)
    return app


def _current_merchants() -> None:
    """Each request sees the merchants in effect (re-read when the table changed, at most every
    MERCHANTS_REFRESH_S): a disabled merchant's webhooks get 404 within that time."""
    current_app.config["MERCHANTS"] = runtime.merchants()


def _celery_publish_events(event_ids: list[int]) -> None:
    from workers.tasks import publish_events

    publish_events(event_ids)


_RELAY = Relay(_celery_publish_events)


def _celery_enqueue_step(step: str, return_id: int) -> None:
    from workers.tasks import context

    context().enqueue(step, return_id)
