"""Remote steps (command and reply), wait steps and approvals, in the engine.

The engine runs in this process on PostgreSQL; replies and signals are
applied as the reply task or the admin would apply them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from sagas import engine, registry
from sagas.definition import (
    Remote,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepKind,
    Wait,
    WaitTimeout,
)
from sagas.errors import OperatorActionRefused
from sagas.models import SagaEvent, StepAttempt
from sagas.participants import sign
from sagas.states import AttemptStatus, SagaStatus
from tests.engine_support import behave, calls, cleanup, run_next, start

pytestmark = pytest.mark.django_db

FAST = RetryPolicy(max_attempts=2, backoff=0.01, max_backoff=0.02, jitter=False)
RESERVE = Remote("warehouse.reserve", queue="warehouse")
RELEASE = Remote("warehouse.release", queue="warehouse")


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def _define(name: str, *steps: Step) -> SagaDefinition:
    return registry.register(SagaDefinition(name=name, steps=steps))


def _remote_saga() -> SagaDefinition:
    return _define(
        "remote_flow",
        Step("charge", behave, compensation=behave, retry=FAST),
        Step("reserve", RESERVE, compensation=RELEASE, retry=FAST, timeout=10),
        Step("ship", behave, compensation=behave, retry=FAST),
    )


def _current(saga_id: Any) -> StepAttempt:
    return StepAttempt.objects.filter(saga_id=saga_id).latest("id")


def _commands(callbacks: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (cb.args[0], cb.args[2])
        for cb in callbacks
        if getattr(cb, "args", None)
        and getattr(cb.func, "__name__", "") == "_send_command"
    ]


def test_a_remote_step_sends_its_command_after_commit_and_waits(
    django_capture_on_commit_callbacks: Any,
) -> None:
    saga = start(_remote_saga())
    run_next(saga.pk)

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = run_next(saga.pk)

    attempt = _current(saga.pk)
    assert outcome == "waiting"
    assert attempt.status == AttemptStatus.WAITING
    [(task, command)] = _commands(callbacks)
    assert task == "warehouse.reserve"
    assert command["attempt_id"] == attempt.pk
    assert command["idempotency_key"] == f"{saga.pk}:reserve:action"
    assert command["reply_task"] == "sagas.step_reply"


def test_a_completed_reply_moves_the_saga_on_and_keeps_its_result() -> None:
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)
    waiting = _current(saga.pk)

    outcome = engine.step_reply(
        saga.pk, waiting.pk, status="completed", result={"reservation": 7},
        participant="warehouse",
    )  # fmt: skip
    run_next(saga.pk)

    saga.refresh_from_db()
    assert outcome == "completed"
    assert saga.status == SagaStatus.COMPLETED
    assert saga.context["reservation"] == 7
    assert SagaEvent.objects.filter(saga=saga, actor="participant:warehouse").exists()


def test_duplicate_late_and_superseded_replies_change_nothing() -> None:
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)
    first = _current(saga.pk)
    assert engine.step_reply(saga.pk, first.pk, status="failed", error="busy",
                             transient=True) == "failed"  # fmt: skip
    run_next(saga.pk)
    second = _current(saga.pk)
    assert second.status == AttemptStatus.WAITING

    # when: the first attempt's reply comes again, then a duplicate of a success
    stale = engine.step_reply(saga.pk, first.pk, status="completed")
    done = engine.step_reply(saga.pk, second.pk, status="completed")
    again = engine.step_reply(saga.pk, second.pk, status="failed", error="late")

    # then
    assert (stale, done, again) == ("ignored", "completed", "ignored")
    assert _current(saga.pk).step == "ship"


def test_a_permanent_reply_compensates_with_remote_compensations() -> None:
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)

    engine.step_reply(saga.pk, _current(saga.pk).pk, status="failed",
                      error="no stock", partial=True)  # fmt: skip
    release = _current(saga.pk)
    assert (release.step, release.kind) == ("reserve", "compensation")
    run_next(saga.pk)
    engine.step_reply(saga.pk, release.pk, status="completed")
    run_next(saga.pk)

    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["charge"]


def test_a_reply_that_never_comes_is_re_sent_then_timed_out_by_the_database(
    django_capture_on_commit_callbacks: Any,
) -> None:
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)
    from django.db.models.functions import Now

    from sagas.models import Saga

    # when: the lease lapses without a reply
    Saga.objects.filter(pk=saga.pk).update(wake_at=Now())
    with django_capture_on_commit_callbacks() as callbacks:
        engine.sweep()
    # then: the command went again
    assert [task for task, _ in _commands(callbacks)] == ["warehouse.reserve"]

    # when: the deadline passes, twice (two attempts)
    for _ in range(2):
        expire_waiting(saga.pk)
        engine.sweep()
        if _current(saga.pk).kind == "action" and _current(saga.pk).step == "reserve":
            run_next(saga.pk)

    # then: timed out, and compensating its own possibly-done reservation
    timed_out = StepAttempt.objects.filter(saga=saga, step="reserve", kind="action")
    assert {a.status for a in timed_out} == {AttemptStatus.TIMED_OUT}
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATING
    assert (_current(saga.pk).step, _current(saga.pk).kind) == (
        "reserve",
        "compensation",
    )


def expire_waiting(saga_id: Any) -> None:
    from datetime import timedelta

    from django.db.models.functions import Now

    from sagas.models import Saga

    past = Now() - timedelta(minutes=5)
    StepAttempt.objects.filter(saga_id=saga_id, status=AttemptStatus.WAITING).update(
        deadline_at=past
    )
    Saga.objects.filter(pk=saga_id).update(wake_at=past)


def test_a_remote_pivot_without_a_reply_is_parked() -> None:
    definition = _define(
        "remote_pivot",
        Step("charge", behave, compensation=behave, retry=FAST),
        Step("book", Remote("airline.book"), kind=StepKind.PIVOT,
             retry=RetryPolicy(max_attempts=1)),
    )  # fmt: skip
    saga = start(definition)
    run_next(saga.pk)
    run_next(saga.pk)

    expire_waiting(saga.pk)
    engine.sweep()

    saga.refresh_from_db()
    assert saga.status == SagaStatus.FAILED
    assert "outcome is unknown" in saga.last_error


# --- wait steps and approvals ------------------------------------------------------


def _approval_saga(on_timeout: WaitTimeout = WaitTimeout.COMPENSATE) -> SagaDefinition:
    return _define(
        f"approval_{on_timeout}",
        Step("reserve", behave, compensation=behave, retry=FAST),
        Step("approve", Wait(approval=True, on_timeout=on_timeout), timeout=3600),
        Step("ship", behave, compensation=behave, retry=FAST),
    )


def test_an_event_completes_the_wait_step_that_awaits_it() -> None:
    definition = _define(
        "await_event",
        Step("reserve", behave, compensation=behave, retry=FAST),
        Step("paid", Wait(event="payment.settled"), timeout=60),
    )
    saga = start(definition)
    run_next(saga.pk)
    run_next(saga.pk)

    assert engine.saga_signal(saga.pk, "other.event") == "ignored"
    assert engine.saga_signal(saga.pk, "payment.settled", result={"ref": "x"}) == (
        "completed"
    )

    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPLETED
    assert saga.context["ref"] == "x"


def test_an_approved_saga_goes_on_and_the_approval_is_audited() -> None:
    saga = start(_approval_saga())
    run_next(saga.pk)
    run_next(saga.pk)

    engine.saga_approve(saga.pk, actor="olga", reason="checked the address")
    run_next(saga.pk)

    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPLETED
    assert SagaEvent.objects.filter(
        saga=saga, actor="operator:olga", detail="approved: checked the address"
    ).exists()


def test_a_rejected_saga_compensates_and_the_rejection_is_audited() -> None:
    saga = start(_approval_saga())
    run_next(saga.pk)
    run_next(saga.pk)

    engine.saga_reject(saga.pk, actor="olga", reason="fraud")
    run_next(saga.pk)

    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATED
    assert saga.error == "rejected by operator:olga: fraud"
    assert calls(saga.pk, "compensation") == ["reserve"]
    with pytest.raises(OperatorActionRefused):
        engine.saga_approve(saga.pk, actor="olga", reason="too late")


@pytest.mark.parametrize(
    ("on_timeout", "status"),
    [
        (WaitTimeout.COMPENSATE, SagaStatus.COMPENSATING),
        (WaitTimeout.ESCALATE, SagaStatus.FAILED),
    ],
)
def test_an_approval_nobody_gives_times_out_as_configured(
    on_timeout: WaitTimeout, status: str
) -> None:
    saga = start(_approval_saga(on_timeout))
    run_next(saga.pk)
    run_next(saga.pk)

    expire_waiting(saga.pk)
    engine.sweep()

    saga.refresh_from_db()
    assert saga.status == status
    approval = StepAttempt.objects.get(saga=saga, step="approve")
    assert approval.status == AttemptStatus.TIMED_OUT


# --- the HTTP reply endpoint ---------------------------------------------------------


def _post(client: Client, body: dict[str, Any], *, secret: str = "s3cret",
          stamp: int | None = None, signature: str | None = None) -> Any:  # fmt: skip
    raw = json.dumps(body).encode()
    stamp = int(time.time()) if stamp is None else stamp
    return client.post(
        "/api/participants/replies/",
        raw,
        content_type="application/json",
        HTTP_X_SAGA_PARTICIPANT="warehouse",
        HTTP_X_SAGA_TIMESTAMP=str(stamp),
        HTTP_X_SAGA_SIGNATURE=signature or sign(secret, stamp, raw),
    )


def test_a_signed_http_reply_completes_the_step_and_a_replay_is_refused(
    client: Client, settings: Any
) -> None:
    settings.SAGAS_PARTICIPANTS = {"warehouse": "s3cret"}
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)
    body = {"saga_id": str(saga.pk), "attempt_id": _current(saga.pk).pk,
            "status": "completed", "result": {"reservation": 3}}  # fmt: skip
    stamp = int(time.time())

    first = _post(client, body, stamp=stamp)
    replay = _post(client, body, stamp=stamp)

    assert first.status_code == 200
    assert first.json() == {"outcome": "completed"}
    assert replay.status_code == 409
    assert _current(saga.pk).step == "ship"


@pytest.mark.parametrize("tamper", ["wrong secret", "old timestamp", "bad signature"])
def test_an_unsigned_or_stale_http_reply_is_refused(
    client: Client, settings: Any, tamper: str
) -> None:
    settings.SAGAS_PARTICIPANTS = {"warehouse": "s3cret"}
    saga = start(_remote_saga())
    run_next(saga.pk)
    run_next(saga.pk)
    body = {"saga_id": str(saga.pk), "attempt_id": _current(saga.pk).pk,
            "status": "completed"}  # fmt: skip
    options: dict[str, dict[str, Any]] = {
        "wrong secret": {"secret": "guess"},
        "old timestamp": {"stamp": int(time.time()) - 3600},
        "bad signature": {"signature": "0" * 64},
    }
    kwargs = options[tamper]

    response = _post(client, body, **kwargs)

    assert response.status_code == 401
    assert _current(saga.pk).status == AttemptStatus.WAITING
