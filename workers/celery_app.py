"""The Celery application: `celery -A workers.celery_app worker|beat`."""
from __future__ import annotations

import sys

from celery import Celery

from integration.production import refuse_to_run_wrong

from . import observability, runtime  # noqa: F401  (observability: JSON logs and metrics via signals)
from .error_reporting import init_error_reporting, process_name

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
    every = {
        "poll-rlm-receipts": ("rlm.poll_receipts", s.receipt_poll_interval_s),
        "sweep": ("integration.sweep", s.sweep_interval_s),
        "reconcile-loop": ("loop.reconcile", s.reconcile_interval_s),
        "purge-old-data": ("integration.purge", s.retention_interval_s),
    }
    # Each entry expires after one interval: a backlog never piles up duplicate polls.
    return {name: {"task": task, "schedule": interval, "options": {"expires": max(interval, 1.0)}}
            for name, (task, interval) in every.items()}


app.conf.beat_schedule = _schedule()
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
import workers.tasks  # noqa: E402,F401  (register tasks in every process that loads the app)
