"""Task names, queues and routes (no Celery import: publishers and tests can use it freely)."""

STEP_TASK_NAMES = {
    "handle_event": "loop.handle_event",
    "create_rma": "rlm.create_rma",
    "transmit_rma": "rlm.transmit_rma",
    "decide": "integration.decide",
    "act_in_loop": "loop.act_in_loop",
    "close_rma": "rlm.close_rma",
    "cancel_rma": "rlm.cancel_rma",
}

# Queues split by the system their tasks wait on. Periodic jobs get a queue of their own so a
# backlog of RLM work (a thousand returns at once) never delays the receipt poll behind it.
QUEUES = ("periodic", "default", "erp", "loop")
TASK_ROUTES = {
    "rlm.poll_receipts": {"queue": "periodic"},
    "integration.sweep": {"queue": "periodic"},
    "loop.reconcile": {"queue": "periodic"},
    "integration.purge": {"queue": "periodic"},
    # Handling a webhook is database work (a Loop read at most, through the shared rate-limit
    # bucket): it must not wait behind every Loop action queued for a rate-limit slot.
    "loop.handle_event": {"queue": "default"},
    "loop.*": {"queue": "loop"},
    "rlm.*": {"queue": "erp"},
}


def publisher(redis_url: str):
    """A bare Celery app that only publishes, with the service's routes (importing
    workers.tasks would build the whole worker app, and an embedded broker with it)."""
    from celery import Celery

    from integration.infra.redis_tls import ssl_options
    from workers import broker

    broker.install()  # its commands on the process's shared Redis pool, like the service's
    app = Celery("rlm-loop-publisher", broker=redis_url)
    app.conf.task_routes = TASK_ROUTES
    app.conf.broker_use_ssl = ssl_options(redis_url)
    # Asking the workers (`inspect`, doctor) holds one pooled connection for the replies while
    # it publishes the question on another: one alone would wait for itself forever.
    app.conf.broker_pool_limit = 2
    return app
