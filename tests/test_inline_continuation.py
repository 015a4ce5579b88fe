"""A worker that finished a step runs the saga's next one itself.

Real worker and beat processes on PostgreSQL and Redis.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from django.db import transaction

from sagas.engine import saga_start
from sagas.models import SagaEvent, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from sagas.testing import wait_for_sagas
from tests.sagatest.models import Effect
from tests.sagatest.sagas import STEPS

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def _start(**context: Any) -> str:
    with transaction.atomic():
        saga = saga_start(
            "test_four_steps", business_key=f"inline:{uuid.uuid4()}", context=context
        )
    return str(saga.pk)


def _messages(worker: Any) -> int:
    """Return how many step messages the worker has taken so far."""
    text = worker.log_path.read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if "Task sagas.step_execute[" in line and "received" in line
    )


def test_a_four_step_saga_needs_one_message(start_worker: Any) -> None:
    # given
    worker = start_worker("inline")
    before = _messages(worker)

    # when
    [saga] = wait_for_sagas([_start()], timeout=30)

    # then: the first message ran all four steps, each in its own transaction
    assert saga.status == SagaStatus.COMPLETED
    assert _messages(worker) - before == 1
    assert StepAttempt.objects.filter(saga=saga, status="succeeded").count() == 4


def test_the_inline_bound_hands_the_saga_back_to_the_broker(
    start_worker: Any,
) -> None:
    # given: at most two steps per message
    worker = start_worker("bounded", SAGAS_INLINE_STEPS="2")
    before = _messages(worker)

    # when
    [saga] = wait_for_sagas([_start()], timeout=30)

    # then
    assert saga.status == SagaStatus.COMPLETED
    assert _messages(worker) - before == 2


def test_kill9_during_an_inline_step_is_recovered_once_by_the_sweeper(
    start_worker: Any, start_beat: Any
) -> None:
    # given: step_two, run inline after step_one, takes 4 s
    env = {"SAGAS_DISPATCH_LEASE": "2"}
    start_beat(**env)
    victim = start_worker("victim", **env)
    saga_id = _start(sleep={"step_two": 4})
    deadline = time.monotonic() + 20
    while not StepAttempt.objects.filter(
        saga_id=saga_id, step="step_one", status=AttemptStatus.SUCCEEDED
    ).exists():
        assert time.monotonic() < deadline, "step_one never finished"
        time.sleep(0.05)
    time.sleep(0.5)

    # when: the worker dies while step_two runs; no message for it exists
    victim.kill9()
    start_worker("rescuer", **env)
    [saga] = wait_for_sagas([saga_id], timeout=60)

    # then: the sweeper re-sent step_two; every effect happened once
    assert saga.status == SagaStatus.COMPLETED
    assert SagaEvent.objects.filter(
        saga_id=saga_id, actor="sweeper", step="step_two", detail__startswith="re-sent"
    ).exists()
    effects = list(
        Effect.objects.filter(saga_id=saga_id).values_list("step", flat=True)
    )
    assert sorted(effects) == sorted(STEPS)


def test_a_begun_saga_is_not_stalled_behind_a_burst_of_new_ones(
    start_worker: Any,
) -> None:
    # given: one step per message, one worker process; saga A's first step is
    # running when the worker is frozen and 100 new sagas are queued
    worker = start_worker("fifo", concurrency=1, SAGAS_INLINE_STEPS="0")
    begun = _start(sleep={"step_one": 3})
    time.sleep(1.5)
    worker.pause()
    try:
        with transaction.atomic():
            burst = [
                str(
                    saga_start(
                        "test_four_steps",
                        business_key=f"burst:{uuid.uuid4()}",
                        context={},
                    ).pk
                )
                for _ in range(100)
            ]
    finally:
        worker.resume()

    # when
    sagas = wait_for_sagas([begun, *burst], timeout=120)

    # then: A's later steps went ahead of the queued first steps, so it ended
    # before the burst's first steps had run (in arrival order, after them all)
    assert {s.status for s in sagas} == {SagaStatus.COMPLETED}
    ended = sagas[0].finished_at
    assert ended is not None
    first_steps_before = StepAttempt.objects.filter(
        saga_id__in=burst, step="step_one", finished_at__lt=ended
    ).count()
    assert first_steps_before <= 10, f"{first_steps_before} burst steps went first"
