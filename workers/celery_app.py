"""The Celery application: `celery -A workers.celery_app worker|beat`."""
from __future__ import annotations

import sys

from celery import Celery, signals

from integration.infra import redis_pool
from integration.production import refuse_to_run_wrong
from integration.workflow.steps import PERIODIC

from . import observability, runtime  # noqa: F401  (observability: JSON logs and metrics via signals)
from .error_reporting import celery_role, init_error_reporting, process_name

# Names on this process's Redis and database connections. A worker's main process consumes with
# acknowledgements: kombu's restore of unacknowledged messages nests two commands, so its pool
# holds two connections (integration.infra.redis_pool); its pool processes publish and run one task
# at a time, one connection each (set in each of them at start, below).
_ROLE = redis_pool.role() or celery_role(sys.argv)  # the web, the CLI: already named
if not redis_pool.role():
    redis_pool.configure(_ROLE, connections=2 if "worker" in sys.argv else 1)


@signals.worker_process_init.connect
def _in_pool_process(**_):
    redis_pool.configure(f"{_ROLE}-pool", connections=1)

# Workers, beat and Flower all load this module: in production each refuses a wrong
# configuration here, before the embedded Valkey could be started below.
refuse_to_run_wrong(runtime.settings(), runtime.merchants)
runtime.merchants()  # a bad merchant configuration stops the worker here, naming the key
init_error_reporting(process_name(sys.argv), runtime.settings(), runtime.merchants())  # with SENTRY_DSN
runtime.redis_url()  # sets REDIS_URL (embedded server if unset) before the config is read

app = Celery("rlm_loop")
app.config_from_object("celeryconfig")


def _schedule() -> dict:
    s = runtime.settings()
    every = {p.name: (p.task, float(getattr(s, p.every))) for p in PERIODIC}
    # Each entry expires after one interval: a backlog never piles up duplicate polls.
    return {name: {"task": task, "schedule": interval, "options": {"expires": max(interval, 1.0)}}
            for name, (task, interval) in every.items()}


app.conf.beat_schedule = _schedule()
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
import workers.tasks  # noqa: E402,F401  (register tasks in every process that loads the app)
