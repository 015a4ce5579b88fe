"""The testing kit users call from their own suites: ``sagas.testing`` and the
``sagas`` pytest plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sagas import engine, testing
from sagas.models import Saga, StepAttempt
from sagas.states import AttemptKind, AttemptStatus, SagaStatus
from tests.sagatest.models import Effect

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

SAGA = "test_four_steps"


def _messages(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.msg")}


@pytest.mark.embedded
def test_messages_published_by_tests_never_reach_the_development_broker(
    sagas_broker_env: dict[str, str],
) -> None:
    # given the development broker folder of the embedded default
    development = Path(settings.BROKER_FOLDER)
    session = Path(sagas_broker_env["SAGAS_BROKER_FOLDER"])
    before = _messages(development)

    # when a test commits a saga start (its first step is published on commit)
    with transaction.atomic():
        engine.saga_start(SAGA, business_key="kit:broker")

    # then the message is in the session's own folder, none in the development one
    assert session != development
    assert _messages(development) == before
    assert len(_messages(session)) >= 1


def test_compensation_checker_fails_each_step_and_checks_the_reverse_order() -> None:
    # when
    cases = testing.assert_compensates_in_reverse(SAGA)

    # then every step was failed once, and what ran before it was undone
    assert [(c.step, c.compensated) for c in cases] == [
        ("step_one", []),
        ("step_two", ["step_one"]),
        ("step_three", ["step_two", "step_one"]),
        ("step_four", ["step_three", "step_two", "step_one"]),
    ]


def test_injected_faults_are_removed_after_their_block() -> None:
    # given a block that failed step_two
    with testing.failing_permanently(SAGA, 1):
        failed = testing.run_saga_inline(
            engine.saga_start(SAGA, business_key="kit:failed").pk
        )

    # when a saga runs after it
    later = testing.run_saga_inline(engine.saga_start(SAGA, business_key="kit:ok").pk)

    # then only the first was affected
    assert (failed.status, later.status) == (
        SagaStatus.COMPENSATED,
        SagaStatus.COMPLETED,
    )


def test_crash_after_a_step_rolls_it_back_and_the_sweeper_runs_it_again() -> None:
    # given the worker dies right after step_two's action
    saga = engine.saga_start(SAGA, business_key="kit:crash")
    with (
        testing.crashing_after(SAGA, 1),
        pytest.raises(testing.WorkerCrash),
    ):
        testing.run_saga_inline(saga.pk)
    attempt = StepAttempt.objects.get(saga=saga, step="step_two")
    assert attempt.status == AttemptStatus.DISPATCHED

    # when
    done = testing.recover_lost_step(saga.pk)

    # then the step ran again (its deadline, 20 s, comes before the lease: the
    # sweeper timed the attempt out and retried it) and its writes committed once
    assert done.status == SagaStatus.COMPLETED
    assert Effect.objects.filter(saga_id=saga.pk, step="step_two").count() == 1
    assert list(
        StepAttempt.objects.filter(saga=saga, step="step_two")
        .order_by("number")
        .values_list("status", flat=True)
    ) == [AttemptStatus.TIMED_OUT, AttemptStatus.SUCCEEDED]


def test_compensation_failing_once_is_retried_and_succeeds() -> None:
    # given
    saga = engine.saga_start(
        SAGA, business_key="kit:flaky", context={"fail": {"step_two": "permanent"}}
    )

    # when
    with testing.compensation_failing_once(SAGA, 0):
        done = testing.run_saga_inline(saga.pk)

    # then
    assert done.status == SagaStatus.COMPENSATED
    assert (
        StepAttempt.objects.filter(
            saga=saga, step="step_one", kind=AttemptKind.COMPENSATION
        ).count()
        == 2
    )


def test_fake_clock_moves_database_backoffs_and_python_time(
    saga_clock: Any, settings: Any
) -> None:
    # given a compensation retry that waits 30-60 s in the database
    settings.SAGAS_COMPENSATION_BACKOFF = 60
    settings.SAGAS_COMPENSATION_MAX_BACKOFF = 120
    settings.SAGAS_MAX_BROKER_COUNTDOWN = 0
    saga = engine.saga_start(
        SAGA, business_key="kit:clock", context={"fail": {"step_two": "permanent"}}
    )
    with testing.compensation_failing_once(SAGA, 0):
        # Run what is dispatched, as a worker would, until the retry waits.
        for _ in range(10):
            current = Saga.objects.select_related("current_attempt").get(pk=saga.pk)
            attempt = current.current_attempt
            assert attempt is not None
            if attempt.status == AttemptStatus.SCHEDULED:
                break
            engine.step_execute(current.pk, attempt.pk)
    assert attempt is not None
    assert attempt.status == AttemptStatus.SCHEDULED
    python_before = timezone.now()

    # when 10 s pass, then 60 more
    saga_clock.advance(10)
    early = testing.sweep_now()
    saga_clock.advance(60)
    late = testing.sweep_now()

    # then the backoff is due only after the second move, and Python's clock moved
    assert (early, late) == (0, 1)
    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.DISPATCHED
    assert (timezone.now() - python_before).total_seconds() >= 70
