"""kombu's Redis transport, surviving a broker that goes away mid-restore.

When the Redis connection drops, the worker releases its connection, and
closing the channel restores unacked messages. If the connection's client is
already gone by then, kombu reads ``None.hostname`` and raises AttributeError,
which no connection-error handler expects: the worker exits with
"Unrecoverable error" and sagas wait until someone restarts it (the same
family as kombu#582 and #970). Here that case raises the transport's own
``ConnectionError``, which kombu ignores while releasing, so the worker
reconnects; the messages come back after the visibility timeout.

``config/celery.py`` registers it for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    # While the engine publishes (``publishing``), commands go through one
    # client kept per channel: kombu builds a redis.Redis (its table of
    # response callbacks and all) for every message it sends otherwise.
    _kept_client: Any = None
    _keeping: bool = False

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is already closed")
        parent: Any = super()
        return parent._connparams(asynchronous=asynchronous)

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Send this block's commands through the channel's kept client."""
        keeping, self._keeping = self._keeping, True
        try:
            yield
        finally:
            self._keeping = keeping

    def _create_client(self, asynchronous: bool = False) -> Any:
        parent: Any = super()
        if asynchronous or not self._keeping:
            return parent._create_client(asynchronous=asynchronous)
        kept = self._kept_client
        # A channel that reconnected has a new pool: the kept client follows.
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept_client = parent._create_client()
        return kept


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` URLs use this transport."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"
