"""RabbitMQ as the broker: durable priority queue, persistent messages, and a
continuation served before sagas not yet started."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from kombu import Connection

from config.celery import app
from sagas.dispatch import Send, send_many_on_commit
from tests.brokers import publishing_to
from tests.services import RabbitMQ

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
]


@pytest.fixture
def rabbitmq(rabbitmq_server: RabbitMQ) -> Iterator[str]:
    url = rabbitmq_server.url
    with publishing_to(url), Connection(url) as connection:
        queue = app.amqp.queues["celery"](connection.default_channel)
        queue.declare()
        queue.purge()
        yield url
        queue.purge()


def _drain(url: str) -> list[Any]:
    messages = []
    with Connection(url) as connection:
        queue = app.amqp.queues["celery"](connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            messages.append(message)
    return messages


def test_continuations_are_served_before_sagas_not_yet_started(rabbitmq: str) -> None:
    # given: five sagas' first steps queued, then one saga's next step
    started = [uuid.uuid4() for _ in range(5)]
    running = uuid.uuid4()
    with transaction.atomic():
        for saga_id in started:
            send_many_on_commit([Send(saga_id, 1, 30, first=True)])
    with transaction.atomic():
        send_many_on_commit([Send(running, 2, 30)])

    # when
    messages = _drain(rabbitmq)

    # then: the continuation comes out first, every message is persistent
    order = [message.headers["argsrepr"] for message in messages]
    assert len(order) == 6
    assert str(running) in order[0]
    assert {message.properties["delivery_mode"] for message in messages} == {2}


def test_queue_is_durable_with_priorities(rabbitmq: str) -> None:
    with Connection(rabbitmq) as connection:
        queue = app.amqp.queues["celery"](connection.default_channel)
        # A passive declare fails unless the queue exists as declared.
        queue.queue_declare(passive=True)

    assert queue.durable is True
    assert queue.queue_arguments == {"x-max-priority": 10}
