"""The two brokers the engine supports, for tests that run on each.

Redis is the default of the suite; RabbitMQ comes from ``scripts/services.py
run --rabbitmq`` (``make test`` starts both). Switching moves the workers and
beat started for a test, and this test process's own publishing, to the broker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from kombu import Connection, pools

from config.celery import app

BROKERS = ("redis", "rabbitmq")
# The suite's default broker, as the run started (switching changes the variable).
_REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")


def broker_url(name: str) -> str:
    """Return the URL of broker ``name`` started for this run."""
    if name == "redis":
        return _REDIS_URL
    url = os.environ.get("SAGAS_TEST_RABBITMQ_URL")
    if not url:
        raise RuntimeError(
            "RabbitMQ tests need a node: run them with `make test` or "
            "`scripts/services.py run --rabbitmq -- pytest ...`"
        )
    return url


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


def drop_messages(name: str) -> None:
    """Lose every queued message of broker ``name`` (Redis FLUSHALL, queue purge)."""
    if name == "redis":
        redis.Redis.from_url(broker_url(name)).flushall()
        return
    with Connection(broker_url(name)) as connection:
        channel: Any = connection.default_channel
        channel.queue_purge("celery")


def restart(name: str) -> None:
    """Stop broker ``name`` and start it again with the same data."""
    if name == "redis":
        _restart_redis()
    else:
        _restart_rabbitmq()


def _wait_stopped(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"broker pid {pid} did not stop")


def _restart_redis() -> None:
    _wait_stopped(int(Path(os.environ["SAGAS_TEST_REDIS_PIDFILE"]).read_text()))
    subprocess.Popen(
        ["redis-server", os.environ["SAGAS_TEST_REDIS_CONF"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis.from_url(broker_url("redis"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("redis did not come back")


def _restart_rabbitmq() -> None:
    _wait_stopped(int(Path(os.environ["SAGAS_TEST_RABBITMQ_PIDFILE"]).read_text()))
    start = json.loads(Path(os.environ["SAGAS_TEST_RABBITMQ_START"]).read_text())
    log = Path(start["env"]["RABBITMQ_LOG_BASE"]).parent / "restarted.log"
    with log.open("ab") as output:
        subprocess.Popen(
            start["argv"],
            env=start["env"],
            cwd=Path(start["env"]["HOME"]),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    port = urlsplit(broker_url("rabbitmq")).port
    assert port is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                if sock.recv(7)[:3] == b"\x01\x00\x00":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("rabbitmq did not come back")
