"""kombu's Redis transport, made to count its connections (docs/operations.md, *Connection budget*).

Stock kombu gives every channel two pools of its own, one for commands (publish, ack, queue
lookups) and one for the event loop (BRPOP, SUBSCRIBE), and checks each new channel with a PING
whose connection then stays open unused: a process that only publishes (a web process, beat, a
Celery pool process) held two connections for that, next to the service's own client. Here:

- commands go through the process's shared pool (integration.infra.redis_pool), the one the rate
  limiter, the locks, the metrics and the health checks use: one connection in a process that
  does one thing at a time, at most two in a worker's main process (workers.celery_app);
- the command client is made once per channel: stock kombu builds a new `redis.Redis` for
  every command it sends (about a third of a millisecond of CPU each, most of a publish);
- the PING's connection is closed once the channel is checked; a channel that consumes opens
  its BRPOP or SUBSCRIBE connection when it starts listening, as before;
- every connection is named (`rlm-loop:<process>:shared`, `...:listen`), for `CLIENT LIST`.

`install()` makes `redis://` and `rediss://` URLs use this transport in the current process, so
the URLs, Flower's broker view and the TLS settings (`broker_use_ssl`) stay what they were.
"""
from __future__ import annotations

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis

from integration.infra import redis_pool

NAME = "workers.broker:Transport"


class Channel(kombu_redis.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # kombu PINGed the server on the event-loop pool to check the channel; that connection
        # would stay open unused in a channel that only publishes.
        if self._async_pool is not None:
            self._async_pool.disconnect(inuse_connections=False)

    _client = None  # the command client, over the shared pool

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._client is None:
            self._client = super()._create_client()
        return self._client

    def _get_pool(self, asynchronous=False):
        params = self._connparams(asynchronous=asynchronous)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        if asynchronous:  # BRPOP and SUBSCRIBE hold a connection each while listening
            params["client_name"] = redis_pool.client_name("listen")
            return redis.ConnectionPool(**params)
        info = self.connection.client
        return redis_pool.shared_pool(redis_pool.endpoint(
            host=info.hostname, port=info.port, db=params["db"], username=info.userid,
            password=info.password, tls=bool(info.ssl)))

    def _disconnect_pools(self):
        # The shared pool is the whole process's: close only its idle connections (a dropped
        # broker connection must not be reused), never one another thread is using.
        shared, self._pool, self._client = self._pool, None, None
        super()._disconnect_pools()
        if shared is not None:
            shared.disconnect(inuse_connections=False)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Use this transport for `redis://` and `rediss://` broker URLs in this process."""
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = NAME
        kombu.transport._transport_cache.pop(scheme, None)
