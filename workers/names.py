"""Task names, queues and routes, derived from the step table (integration/workflow/steps.py).
No Celery import here: publishers and tests can use it freely."""
from integration.workflow.steps import DISPATCH_EVENTS, HANDLE_EVENT, QUEUES, STEPS, TASK_QUEUES

# Step name -> task name, for publishing a step by name (Context.enqueue).
STEP_TASK_NAMES = {"handle_event": HANDLE_EVENT, **{s.name: s.task for s in STEPS}}
TASK_ROUTES = {task: {"queue": queue} for task, queue in TASK_QUEUES.items()}

__all__ = ["DISPATCH_EVENTS", "QUEUES", "STEP_TASK_NAMES", "TASK_ROUTES", "publisher"]


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
