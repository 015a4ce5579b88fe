"""The Redis transport a worker uses survives a connection closed mid-restore."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from celery import current_app
from kombu import Connection
from kombu.transport import redis as kombu_redis

from sagas import redis_transport
from sagas.events.outbox import DELIVER_TASK

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


def test_a_publishing_channel_keeps_one_client_until_its_pool_changes() -> None:
    connection = Connection(
        os.environ["CELERY_BROKER_URL"], transport=redis_transport.Transport
    )
    channel: Any = connection.default_channel
    try:
        # while publishing, the channel hands out one client, on its pool
        with channel.publishing():
            kept = channel._create_client()
            assert channel._create_client() is kept
        assert kept.connection_pool is channel.pool
        # outside it, kombu's own behaviour: a client per call
        assert channel._create_client() is not kept
        # a channel that reconnected (kombu drops its pool) gets a new one
        channel._pool = None
        with channel.publishing():
            renewed = channel._create_client()
        assert renewed is not kept
        assert renewed.connection_pool is channel.pool
    finally:
        connection.release()


def test_a_killed_workers_message_comes_back_soon_after_the_visibility_timeout(
    start_worker: Any,
) -> None:
    # given a worker holding a message it took (a countdown keeps it unacked)
    env = {"CELERY_VISIBILITY_TIMEOUT": "10"}
    first = start_worker("restore-victim", concurrency=1, **env)
    sent = current_app.send_task(DELIVER_TASK, args=({},), countdown=5)
    taken = time.monotonic()
    _wait_for(lambda: f"[{sent.id}] received" in first.log_text(), timeout=15)

    # when it is killed and another worker takes over at once
    first.kill9()
    second = start_worker("restore-heir", concurrency=1, **env)

    # then the message runs once the visibility timeout has passed, without
    # waiting for a rarer scan of the unacked messages
    _wait_for(lambda: f"[{sent.id}] succeeded" in second.log_text(), timeout=60)
    waited = time.monotonic() - taken
    assert waited < 10 + 10 + 5, f"came back after {waited:.0f}s"


def _wait_for(check: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not seen within {timeout}s"
        time.sleep(0.1)
