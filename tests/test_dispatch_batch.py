"""Step messages sent as a batch (the sweeper's re-sends) on the Redis transport."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Queue
from redis.connection import Connection

from sagas.dispatch import STEP_TASK, Send, send_many

pytestmark = pytest.mark.usefixtures("redis_broker")


@pytest.fixture
def redis_broker() -> Iterator[redis.Redis]:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis"):
        pytest.fail("these tests need Redis: run them with `make test`", pytrace=False)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()


def _messages(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def test_a_batch_keeps_each_message_on_its_priority_list(
    redis_broker: redis.Redis,
) -> None:
    # Given a saga start and two continuations sent as one batch
    start = Send(uuid.uuid4(), 1, 60.0, first=True)
    continuations = [Send(uuid.uuid4(), n, 60.0) for n in (2, 3)]

    # When they are sent
    send_many([start, *continuations])

    # Then continuations wait on the list served first and the start on the
    # priority-6 list, each with its task, arguments and hard time limit
    served_first = _messages(redis_broker, "celery")
    later = _messages(redis_broker, "celery:6")
    assert [m["headers"]["task"] for m in served_first + later] == [STEP_TASK] * 3
    assert sorted(m["headers"]["argsrepr"] for m in served_first) == sorted(
        repr((str(s.saga_id), s.attempt_id)) for s in continuations
    )
    assert [m["headers"]["argsrepr"] for m in later] == [repr((str(start.saga_id), 1))]
    body = json.loads(base64.b64decode(later[0]["body"]))
    assert body[0] == [str(start.saga_id), 1]
    assert later[0]["headers"]["timelimit"][0] > 60.0


def test_a_batch_reaches_redis_in_one_round_trip(
    redis_broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given fifty re-sends, and a count of the writes redis-py makes
    sends = [Send(uuid.uuid4(), n, 60.0) for n in range(50)]
    send_many(sends[:2])  # connect and declare the queue first
    redis_broker.flushdb()
    writes: list[int] = []
    original = Connection.send_packed_command

    def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        writes.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counted)

    # When they are sent as one batch
    send_many(sends)

    # Then all fifty are queued with a single write, not one per message
    monkeypatch.undo()
    assert redis_broker.llen("celery") == 50
    assert len(writes) == 1


def test_single_sends_reuse_one_client_and_one_declaration(
    redis_broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first send (it connects and declares the queue), and a count of
    # the Redis clients built and the queue copies bound after it
    send_many([Send(uuid.uuid4(), 1, 60.0)])
    built: list[int] = []
    bound: list[int] = []
    build, bind = redis.Redis.__init__, Queue.bind

    def counted_build(self: redis.Redis, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        build(self, *args, **kwargs)

    def counted_bind(self: Queue, channel: Any) -> Queue:
        bound.append(1)
        return bind(self, channel)

    monkeypatch.setattr(redis.Redis, "__init__", counted_build)
    monkeypatch.setattr(Queue, "bind", counted_bind)

    # When five more steps are sent one by one, as commits send them
    for n in range(2, 7):
        send_many([Send(uuid.uuid4(), n, 60.0)])

    # Then every message is queued through the client kept before, and none
    # re-binds the queue this connection declared already
    monkeypatch.undo()
    assert redis_broker.llen("celery") == 6
    assert built == []
    assert bound == []


_PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "argsrepr", "eta"}


def _shape(message: dict[str, Any]) -> dict[str, Any]:
    """Return a queued message without what differs from one message to the next."""
    body = json.loads(base64.b64decode(message["body"]))
    return {
        "headers": {
            k: v for k, v in message["headers"].items() if k not in _PER_MESSAGE
        },
        "properties": {
            k: v
            for k, v in message["properties"].items()
            if k not in _PER_MESSAGE and k != "delivery_info"
        },
        "routing": message["properties"].get("delivery_info"),
        "body": body,
        "content": (message["content-type"], message["content-encoding"]),
    }


@pytest.mark.parametrize("countdown", [0.0, 3.0])
def test_a_message_is_the_one_celerys_send_task_builds(
    redis_broker: redis.Redis, countdown: float
) -> None:
    # Given one attempt, sent by the engine and by Celery's own send_task
    # with the options the engine used to pass it
    from celery import current_app

    from sagas import conf

    send = Send(uuid.uuid4(), 7, 60.0, countdown=countdown)
    args = (str(send.saga_id), send.attempt_id)

    # When both are queued
    send_many([send])
    options: dict[str, Any] = {
        "priority": 0,
        "time_limit": 60.0 + conf.get("SAGAS_HARD_LIMIT_GRACE"),
        "argsrepr": repr(args),
    }
    if countdown:
        options["countdown"] = countdown
    current_app.send_task(STEP_TASK, args=args, **options)

    # Then they match but for their ids (and, with a countdown, their eta)
    ours, celerys = _messages(redis_broker, "celery")[::-1]
    assert _shape(ours) == _shape(celerys)
    assert ours["headers"]["argsrepr"] == celerys["headers"]["argsrepr"]
    assert (ours["headers"]["eta"] is None) == (not countdown)
