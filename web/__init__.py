"""Flask app factory: the Loop webhook receiver, the operator API and health checks."""
from __future__ import annotations

from flask import Flask

from workers import runtime


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    settings = runtime.settings()
    app.config.update(
        MAX_CONTENT_LENGTH=settings.webhook_max_bytes,
        SETTINGS=settings,
        MERCHANTS=runtime.merchants(),
        SESSIONS=runtime.sessions(),
        ADMIN_TOKEN=settings.admin_token,
        ENQUEUE_EVENT=None,  # set below unless a test supplies its own
    )
    if test_config:
        app.config.update(test_config)
    if app.config["ENQUEUE_EVENT"] is None:
        app.config["ENQUEUE_EVENT"] = _celery_enqueue

    from .api import bp as api_bp
    from .health import bp as health_bp
    from .webhooks import bp as webhooks_bp

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    return app


def _celery_enqueue(event_id: int) -> None:
    from workers.tasks import enqueue

    enqueue("handle_event", event_id)
