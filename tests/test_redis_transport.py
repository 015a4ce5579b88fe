"""The Redis transport a worker uses survives a connection closed mid-restore."""

from __future__ import annotations

import os

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

from sagas import redis_transport

pytestmark = pytest.mark.integration


def _closed_channel(transport: type) -> object:
    connection = Connection(os.environ["CELERY_BROKER_URL"], transport=transport)
    channel = connection.default_channel
    # What kombu's release leaves behind when Redis went away: a channel whose
    # connection has no client left.
    channel.connection.client = None  # type: ignore[attr-defined]
    return channel


def test_kombus_own_channel_raises_what_no_handler_expects() -> None:
    channel = _closed_channel(kombu_redis.Transport)

    with pytest.raises(AttributeError, match="hostname"):
        channel._connparams()  # type: ignore[attr-defined]


def test_the_projects_channel_raises_a_connection_error_kombu_ignores() -> None:
    channel = _closed_channel(redis_transport.Transport)

    with pytest.raises(redis_transport.RedisConnectionError) as raised:
        channel._connparams()  # type: ignore[attr-defined]

    assert isinstance(raised.value, redis_transport.Transport.connection_errors)


def test_redis_urls_use_the_projects_transport() -> None:
    from config.celery import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, redis_transport.Transport)
