"""kombu's Redis transport, surviving a broker that goes away mid-restore.

When the Redis connection drops, the worker releases its connection, and
closing the channel restores unacked messages. If the connection's client is
already gone by then, kombu reads ``None.hostname`` and raises AttributeError,
which no connection-error handler expects: the worker exits with
"Unrecoverable error" and sagas wait until someone restarts it (the same
family as kombu#582 and #970). Here that case raises the transport's own
``ConnectionError``, which kombu ignores while releasing, so the worker
reconnects; the messages come back after the visibility timeout.

It also reuses one Redis client per connection pool where kombu would build
one for every message it puts or acks.

``config/celery.py`` registers it for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        parent: Any = super()
        if asynchronous:
            return parent._create_client(asynchronous=True)
        # kombu builds a client (copying redis-py's table of response
        # callbacks) for every message it puts or acks outside a pipeline,
        # which cost more than sending the message: keep one per connection
        # pool. After a reconnect the channel has a new pool, and a new client.
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = parent._create_client(asynchronous=False)
        return client

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is already closed")
        parent: Any = super()
        return parent._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` URLs use this transport."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"
