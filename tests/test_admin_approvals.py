"""Approval steps from the admin: approve, reject, or let it time out; audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db.models.functions import Now
from django.test import Client

from sagas import engine, registry
from sagas.definition import SagaDefinition, Step, Wait
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from tests.admin_support import CHANGELIST, confirm_post, logged_in, make_user
from tests.engine_support import FAST, behave, calls, cleanup, run_next, start

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def _waiting_for_approval() -> Saga:
    definition = registry.register(
        SagaDefinition(
            name="refund_review",
            steps=(
                Step("hold_funds", behave, compensation=behave, retry=FAST),
                Step("review", Wait(approval=True), timeout=3600),
                Step("pay_out", behave, compensation=behave, retry=FAST),
            ),
        )
    )
    saga = start(definition)
    run_next(saga.pk)
    run_next(saga.pk)
    attempt = StepAttempt.objects.filter(saga=saga).latest("id")
    assert attempt.status == AttemptStatus.WAITING
    return saga


def test_an_operator_approves_from_the_admin(client: Client) -> None:
    saga = _waiting_for_approval()
    olga = logged_in(make_user("olga", perms=["view_saga", "approve_saga"]))

    response = olga.post(CHANGELIST, confirm_post(saga.pk, "approve", reason="KYC ok"))
    run_next(saga.pk)

    saga.refresh_from_db()
    assert response.status_code == 302
    assert saga.status == SagaStatus.COMPLETED
    assert SagaEvent.objects.filter(
        saga=saga, actor="operator:olga", detail="approved: KYC ok"
    ).exists()


def test_an_operator_rejects_from_the_admin_and_the_saga_compensates(
    client: Client,
) -> None:
    saga = _waiting_for_approval()
    olga = logged_in(make_user("olga", perms=["view_saga", "reject_saga"]))

    response = olga.post(CHANGELIST, confirm_post(saga.pk, "reject", reason="fraud"))
    run_next(saga.pk)

    saga.refresh_from_db()
    assert response.status_code == 302
    assert saga.status == SagaStatus.COMPENSATED
    assert saga.error == "rejected by operator:olga: fraud"
    assert calls(saga.pk, "compensation") == ["hold_funds"]
    assert SagaEvent.objects.filter(saga=saga, actor="operator:olga").exists()


def test_approving_needs_its_own_permission(client: Client) -> None:
    saga = _waiting_for_approval()
    others = ["retry_saga", "resume_saga", "compensate_saga", "resolve_saga"]
    viewer = logged_in(make_user("viewer", perms=["view_saga", *others, "reject_saga"]))

    response = viewer.post(CHANGELIST, confirm_post(saga.pk, "approve", reason="sure"))

    assert response.status_code == 403
    assert StepAttempt.objects.filter(saga=saga).latest("id").status == "waiting"


def test_an_approval_nobody_gives_times_out_and_is_recorded(settings: Any) -> None:
    saga = _waiting_for_approval()
    past = Now() - timedelta(minutes=1)
    StepAttempt.objects.filter(saga=saga, status="waiting").update(deadline_at=past)
    Saga.objects.filter(pk=saga.pk).update(wake_at=past)

    engine.sweep()
    run_next(saga.pk)

    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATED
    assert SagaEvent.objects.filter(
        saga=saga, actor="sweeper", step="review", new_status="timed_out"
    ).exists()
