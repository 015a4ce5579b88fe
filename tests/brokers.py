"""The two brokers the engine supports, for tests that run on each.

Redis (``CELERY_BROKER_URL``) is the suite's broker. A test parametrized with
``broker`` (indirectly) runs on a server of its own instead, started for the
session by this test process, which can stop and start it again: a Redis or a
RabbitMQ node (``tests.services``). Switching moves the workers and beat
started for a test, and this test process's own publishing, to that broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from kombu import Connection, pools
from mirakuru import TCPExecutor

from config.celery import app

BROKERS = ("redis", "rabbitmq")
# The suite's broker, as the run started (switching changes the variable).
SUITE_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")


@dataclass(frozen=True)
class Broker:
    """A broker of a test: its kind, URL and, when the test owns it, the server."""

    name: str
    url: str
    server: TCPExecutor | None = None

    def restart(self) -> None:
        """Stop the server and start it again on the same port, with the same data."""
        assert self.server is not None, "the suite's own broker is never restarted"
        self.server.stop()
        self.server.start()

    def drop_messages(self) -> None:
        """Lose every queued message (Redis FLUSHALL, queue purge)."""
        if self.name == "redis":
            redis.Redis.from_url(self.url).flushall()
            return
        with Connection(self.url) as connection:
            channel: Any = connection.default_channel
            channel.queue_purge("celery")


@contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Make this process's Celery app publish to ``url`` for a while."""
    previous = app.conf.broker_url
    _switch(url)
    try:
        yield
    finally:
        _switch(previous)


def _switch(url: str) -> None:
    # Celery caches the connection pool and the producer pool built on it.
    celery: Any = app
    if celery._pool is not None:
        celery._pool.force_close_all()
        celery._pool = None
    celery.amqp._producer_pool = None
    # kombu's process-wide producer pools would hand back the closed ones.
    pools.reset()
    if url.startswith("amqp"):
        options: dict[str, Any] = {"confirm_publish": True, "max_retries": 3}
    else:
        from django.conf import settings

        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    # Celery reads CELERY_BROKER_URL from the environment before its settings.
    os.environ["CELERY_BROKER_URL"] = url
    celery.conf.update(broker_url=url, broker_transport_options=options)
