"""Optional error reports to Sentry, for the web, worker and beat processes.

Only with SENTRY_DSN set is `sentry-sdk` imported (the `sentry` extra: `pip install
'.[sentry]'`); without it nothing changes. Reports carry no shopper data and no secret:
`send_default_pii` stays off, request bodies and local variables are never collected, and every
event goes through integration.infra.scrub before it leaves.
"""
from __future__ import annotations

import os
from typing import Any

from integration.infra.scrub import scrub_event, secrets_of
from integration.merchants import Merchant
from integration.settings import Settings


def process_name(argv: list[str]) -> str:
    """web, worker or beat, as a tag on each report (Celery's command line says which)."""
    return "beat" if "beat" in argv else "flower" if "flower" in argv else "worker"


def celery_role(argv: list[str]) -> str:
    """The Procfile's name for a Celery process: beat, flower, or the worker's node name before
    its `@` (`-n loopworker@%h` is `loopworker`), `worker` without one; `celery` for any other
    Celery command (inspect, call)."""
    if "beat" in argv or "flower" in argv:
        return process_name(argv)
    if "worker" not in argv:
        return "celery"
    for i, arg in enumerate(argv):
        node = None
        if arg in ("-n", "--hostname") and i + 1 < len(argv):
            node = argv[i + 1]
        elif arg.startswith("--hostname="):
            node = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2:
            node = arg[2:]
        if node and "@" in node:
            return node.split("@", 1)[0] or "worker"
    return "worker"


def init_error_reporting(component: str, settings: Settings, merchants: dict[str, Merchant],
                         **options: Any) -> bool:
    """Start reporting to Sentry if SENTRY_DSN is set; True if it did. `options` go to
    `sentry_sdk.init` (tests pass a transport)."""
    dsn = os.environ.get("SENTRY_DSN")
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.integrations.flask import FlaskIntegration
    except ImportError:
        raise RuntimeError("SENTRY_DSN is set but sentry-sdk is not installed: install the "
                           "service with its `sentry` extra (.[sentry])") from None
    secrets = secrets_of(settings.admin_token, os.environ.get("FLOWER_BASIC_AUTH"),
                         *(token for _, token in settings.operator_tokens),
                         *(s for m in merchants.values() for s in (m.loop_api_key, m.rlm_key,
                                                                   *m.webhook_secrets)),
                         urls=(settings.database_url, settings.redis_url, dsn))

    def before_send(event: Any, hint: Any) -> Any:
        return scrub_event(event, hint, secrets=secrets)

    sentry_sdk.init(
        dsn=dsn,
        environment="production" if settings.production else "development",
        send_default_pii=False,
        include_local_variables=False,  # frames would hold payloads and clients with their keys
        max_request_body_size="never",  # webhook bodies carry the shopper's address
        before_send=before_send,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        **options,
    )
    sentry_sdk.get_global_scope().set_tag("process", component)
    return True
