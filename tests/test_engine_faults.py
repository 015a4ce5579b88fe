"""Failure handling of the engine on a four-step saga, run by a real worker."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.db import transaction

from sagas.engine import saga_start
from sagas.models import SagaEvent, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from sagas.testing import compensations_run, steps_run, wait_for_sagas
from tests.sagatest.models import Effect, Fault
from tests.sagatest.sagas import STEPS

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def start(**context: Any) -> str:
    with transaction.atomic():
        saga = saga_start(
            "test_four_steps", business_key=f"test:{uuid.uuid4()}", context=context
        )
    return str(saga.pk)


def effects(saga_id: str) -> list[tuple[str, str]]:
    return list(Effect.objects.filter(saga_id=saga_id).values_list("step", "kind"))


@pytest.mark.parametrize("index", range(len(STEPS)))
def test_permanent_failure_at_each_step_compensates_completed_steps_in_reverse(
    worker: Any, index: int
) -> None:
    # given
    failing = STEPS[index]

    # when
    saga_id = start(fail={failing: "permanent"})
    [saga] = wait_for_sagas([saga_id])

    # then
    completed = list(STEPS[:index])
    assert saga.status == SagaStatus.COMPENSATED
    assert saga.failed_step == failing
    assert steps_run(saga_id) == completed
    assert compensations_run(saga_id) == completed[::-1]
    # The failed step's own write rolled back with its attempt.
    assert effects(saga_id) == [(s, "action") for s in completed] + [
        (s, "compensation") for s in reversed(completed)
    ]


def test_partial_failure_compensates_the_failing_step_too(worker: Any) -> None:
    saga_id = start(fail={"step_three": "partial"})
    [saga] = wait_for_sagas([saga_id])

    assert saga.status == SagaStatus.COMPENSATED
    assert compensations_run(saga_id) == ["step_three", "step_two", "step_one"]


def test_transient_failures_retry_then_succeed(worker: Any) -> None:
    with transaction.atomic():
        saga = saga_start("test_four_steps", business_key=f"test:{uuid.uuid4()}")
        # The sandbox connection commits this at once, before the first message.
        Fault.objects.create(
            saga_id=saga.pk, step="step_two", kind="action", remaining=2
        )

    [saga] = wait_for_sagas([saga.pk])

    assert saga.status == SagaStatus.COMPLETED
    attempts = StepAttempt.objects.filter(saga=saga, step="step_two").order_by("number")
    assert [a.status for a in attempts] == [
        AttemptStatus.FAILED,
        AttemptStatus.FAILED,
        AttemptStatus.SUCCEEDED,
    ]
    assert effects(str(saga.pk)).count(("step_two", "action")) == 1


def test_exhausted_retries_compensate_including_the_flaky_step(worker: Any) -> None:
    with transaction.atomic():
        saga = saga_start("test_four_steps", business_key=f"test:{uuid.uuid4()}")
        Fault.objects.create(
            saga_id=saga.pk, step="step_three", kind="action", remaining=-1
        )

    [saga] = wait_for_sagas([saga.pk])

    assert saga.status == SagaStatus.COMPENSATED
    assert (
        StepAttempt.objects.filter(saga=saga, step="step_three", kind="action").count()
        == 3
    )
    # It may have done part of its work before failing: its compensation runs first.
    assert compensations_run(saga.pk) == ["step_three", "step_two", "step_one"]


def test_every_transition_is_in_the_timeline(worker: Any) -> None:
    saga_id = start(fail={"step_two": "permanent"})
    wait_for_sagas([saga_id])

    timeline = list(
        SagaEvent.objects.filter(saga_id=saga_id)
        .order_by("id")
        .values_list("step", "kind", "old_status", "new_status")
    )
    assert timeline == [
        ("", "", "", "pending"),
        ("step_one", "action", "", "dispatched"),
        ("", "", "pending", "running"),
        ("step_one", "action", "dispatched", "succeeded"),
        ("step_two", "action", "", "dispatched"),
        ("step_two", "action", "dispatched", "failed"),
        ("", "", "running", "compensating"),
        ("step_one", "compensation", "", "dispatched"),
        ("step_one", "compensation", "dispatched", "succeeded"),
        ("", "", "compensating", "compensated"),
    ]
    assert set(
        SagaEvent.objects.filter(saga_id=saga_id).values_list("actor", flat=True)
    ) == {"engine"}
    # The worker logged one structured line per transition it made (the first
    # two were made, and logged, by this process when it started the saga).
    assert _logged_transitions(worker, saga_id) == [
        (step, kind, f"{old or '-'} -> {new}") for step, kind, old, new in timeline[2:]
    ]


def _logged_transitions(worker: Any, saga_id: str) -> list[tuple[str, str, str]]:
    lines = []
    for raw in worker.log_path.read_text().splitlines():
        if not raw.startswith("{"):
            continue
        line = json.loads(raw)
        if line.get("event") == "saga.transition" and line.get("saga_id") == saga_id:
            lines.append((line["step"], line["kind"], line["transition"]))
    return lines
