"""What a sweep writes when it sends attempts again: due backoffs and lapsed
leases, set-based, with their events. Runs on PostgreSQL (one statement) and
on the embedded default (SQLite, the ORM's statements)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from sagas import engine
from sagas.definition import RetryPolicy
from sagas.models import Saga, SagaEvent, StepAttempt
from tests.engine_support import cleanup, define, make_due, run_next, start

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

LEASE = 10
SLOW = RetryPolicy(max_attempts=3, backoff=60, max_backoff=60, jitter=False)
TIMEOUT = 30  # every step of tests.engine_support.define


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def _current(saga: Saga) -> StepAttempt:
    attempt = Saga.objects.get(pk=saga.pk).current_attempt
    assert attempt is not None
    return attempt


def test_a_sweep_sends_again_due_backoffs_and_lapsed_leases(settings: Any) -> None:
    # given a saga whose retry's backoff is over, one whose lease lapsed, and
    # one whose lease lapsed with its deadline nearer than a new lease
    settings.SAGAS_DISPATCH_LEASE = LEASE
    definition = define("c", "c", retry=SLOW)
    backoff = start(definition, plan={"step_1:action": ["transient", "ok"]})
    run_next(backoff.pk)
    assert _current(backoff).status == "scheduled"
    lapsed, near = start(definition), start(definition)
    StepAttempt.objects.filter(saga=near).update(
        deadline_at=Now() + datetime.timedelta(seconds=3)
    )
    for saga in (backoff, lapsed, near):
        make_due(saga.pk)
    before = {
        saga.pk: (_current(saga), Saga.objects.get(pk=saga.pk).updated_at)
        for saga in (backoff, lapsed, near)
    }

    # when one sweep runs
    with CaptureQueriesContext(connection) as captured:
        assert engine.sweep() == 3

    # then the scheduled attempt is dispatched with a new deadline
    due = _current(backoff)
    assert due.pk == before[backoff.pk][0].pk
    assert due.status == "dispatched"
    assert due.dispatches == before[backoff.pk][0].dispatches + 1
    assert due.not_before is None
    now = due.dispatched_at
    assert now is not None
    assert due.deadline_at == now + datetime.timedelta(seconds=TIMEOUT)
    # and the lapsed ones keep their status and deadline, one dispatch more
    for saga in (lapsed, near):
        old, new = before[saga.pk][0], _current(saga)
        assert (new.pk, new.status) == (old.pk, "dispatched")
        assert new.dispatches == old.dispatches + 1
        assert new.deadline_at == old.deadline_at
        assert new.dispatched_at == old.dispatched_at
    # and each saga wakes at the end of a new lease, or at the deadline if sooner
    lease = datetime.timedelta(seconds=LEASE)
    assert Saga.objects.get(pk=backoff.pk).wake_at == now + lease
    assert Saga.objects.get(pk=lapsed.pk).wake_at == now + lease
    assert Saga.objects.get(pk=near.pk).wake_at == _current(near).deadline_at
    # and none of it counts as progress
    for saga in (backoff, lapsed, near):
        assert Saga.objects.get(pk=saga.pk).updated_at == before[saga.pk][1]
    # and each saga has the sweeper's event
    events = {
        event.saga_id: event
        for event in SagaEvent.objects.filter(actor="sweeper").order_by("id")
    }
    assert set(events) == {backoff.pk, lapsed.pk, near.pk}
    assert (
        events[backoff.pk].old_status,
        events[backoff.pk].new_status,
        events[backoff.pk].detail,
        events[backoff.pk].attempt,
    ) == ("scheduled", "dispatched", "", 2)
    for saga in (lapsed, near):
        event = events[saga.pk]
        assert (event.old_status, event.new_status, event.step, event.kind) == (
            "dispatched",
            "dispatched",
            "step_1",
            "action",
        )
        assert event.detail == "re-sent: not finished within the lease"
    # and on PostgreSQL it took the claim and one write between BEGIN and COMMIT
    statements = [query["sql"] for query in captured.captured_queries]
    if connection.vendor == "postgresql":
        assert statements[0] == "BEGIN"
        assert statements[-1] == "COMMIT"
        assert len(statements) == 4, statements
