"""Celery settings; the comment beside each says why it is here."""
import os

from integration.infra import redis_pool, redis_tls
from integration.settings import env_int
from workers import broker
from workers.names import TASK_ROUTES

# Every kombu connection of the process shares its Redis pool with the service's own client and
# names its connections (workers/broker.py; docs/operations.md, *Connection budget*).
broker.install()

broker_url = os.environ["REDIS_URL"]  # resolved by workers.celery_app (embedded server if unset)
# rediss:// (Heroku Redis, self-signed): one TLS policy for the broker, a result backend should
# one be added, RedBeat and Flower (which reads broker_use_ssl); None for redis://.
broker_use_ssl = redis_tls.ssl_options(broker_url)
redis_backend_use_ssl = broker_use_ssl
broker_connection_retry_on_startup = True  # wait for Redis at boot instead of crashing
# Broker connections kept for publishing, per process. Their commands go through the process's
# shared Redis pool (workers.broker), so more of them cost no Redis client, only kombu state;
# a thread that finds them all in use waits for one (publishing takes a millisecond). At least 2:
# asking the workers (Flower, `celery inspect`) holds one for the replies while publishing on another.
broker_pool_limit = max(2, env_int("BROKER_POOL_LIMIT", 2))
# Longer than any countdown or retry delay (capped at 600 s) plus task_time_limit, so Redis
# does not redeliver a message that is merely waiting.
broker_transport_options = {"visibility_timeout": 3600}
visibility_timeout = 3600

task_ignore_result = True  # no result backend: all state is in the database
task_serializer = "json"
accept_content = ["json"]  # messages carry ids only, never shopper data
task_acks_late = True  # ack after the run; every task is idempotent
task_reject_on_worker_lost = True  # a killed child's message goes back to the queue
worker_prefetch_multiplier = 1  # slow HTTP-bound tasks: don't hoard messages
worker_cancel_long_running_tasks_on_connection_loss = True
worker_soft_shutdown_timeout = 20.0  # fits in Heroku's 30 s SIGTERM-to-SIGKILL window
worker_enable_soft_shutdown_on_idle = True
task_soft_time_limit = 240
task_time_limit = 300  # a backstop: every HTTP call has its own timeout
worker_max_tasks_per_child = 1000
worker_hijack_root_logger = False

task_default_queue = "default"
task_routes = TASK_ROUTES
# Publishing must not hang the webhook receiver when Redis is down: the sweeper re-enqueues.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                             "interval_max": 0.5}

beat_scheduler = "redbeat.RedBeatScheduler"
redbeat_redis_url = broker_url
redbeat_redis_use_ssl = broker_use_ssl
redbeat_key_prefix = os.environ.get("REDBEAT_KEY_PREFIX", "redbeat")
# A beat that dies (say, with the broker) holds its lock until this expires, and no periodic
# job runs meanwhile: 2.5 min by default; it must stay well above beat_max_loop_interval, the
# rate at which a live beat refreshes it.
# RedBeat's own client (it decodes responses, so it cannot share the pool): one connection.
redbeat_redis_options = {"client_name": redis_pool.client_name("redbeat")}
redbeat_lock_timeout = env_int("REDBEAT_LOCK_TIMEOUT_S", 150)
beat_max_loop_interval = 5
