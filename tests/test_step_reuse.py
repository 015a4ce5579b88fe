"""A step run inline starts from the saga its previous step wrote, unless someone
has written the saga or its attempt since (fenced on the rows' ``xmin``).

PostgreSQL, in this process.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from sagas import registry
from sagas.definition import SagaDefinition, Step, StepContext, StepKind
from sagas.engine import execution, machine, saga_start, step_execute, writes
from sagas.models import Saga, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from tests.engine_support import cleanup, define

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    if connection.vendor != "postgresql":
        pytest.fail("these tests need PostgreSQL: run them with `make test`")
    yield from cleanup()


def _started(steps: int = 3) -> Saga:
    definition = define(*["c"] * steps)
    with transaction.atomic():
        return saga_start(definition, business_key=f"reuse:{uuid.uuid4()}")


def _first_step_kept(saga: Saga) -> Saga:
    """Run the saga's first step as a worker would; return the saga it kept."""
    assert saga.current_attempt_id is not None
    with machine.continuing(saga.pk) as following:
        assert step_execute(saga.pk, saga.current_attempt_id) == "succeeded"
        kept = following.take_saga()
    assert kept is not None
    return kept


def test_a_written_row_holds_the_database_values_it_was_given() -> None:
    # when: a saga starts (its deadlines and times are the database's clock)
    saga = _started()

    # then: the instances hold what the rows hold, not the expressions
    row = Saga.objects.get(pk=saga.pk)
    attempt = saga.current_attempt
    assert attempt is not None
    assert saga.current_attempt_id == attempt.pk
    stored = StepAttempt.objects.get(pk=attempt.pk)
    assert isinstance(saga.wake_at, datetime)
    assert (saga.wake_at, saga.updated_at) == (row.wake_at, row.updated_at)
    assert (attempt.dispatched_at, attempt.deadline_at) == (
        stored.dispatched_at,
        stored.deadline_at,
    )
    assert attempt.created_at == stored.created_at


def test_an_inline_step_locks_without_reading_the_saga_again() -> None:
    # given: a three-step saga, started
    saga = _started()
    assert saga.current_attempt_id is not None

    # when: a worker runs it, each step after the first inline
    with CaptureQueriesContext(connection) as captured:
        step_execute(saga.pk, saga.current_attempt_id, continue_inline=True)

    # then: one full lock, then a lock of the rows it wrote for each next step
    statements = [q["sql"] for q in captured.captured_queries]
    locks = [sql for sql in statements if "FOR UPDATE" in sql]
    assert len(locks) == 3
    # and nothing else is read: BEGIN, the lock, the write, COMMIT a step
    assert len(statements) == 3 * 4, statements
    assert "s.xmin" not in locks[0]
    assert all("s.xmin" in sql for sql in locks[1:])
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPLETED


def test_the_kept_saga_is_used_while_nobody_wrote_it() -> None:
    kept = _first_step_kept(_started())

    with transaction.atomic():
        assert machine.relock_saga(kept) is kept
        assert isinstance(kept.db_now, datetime)  # type: ignore[attr-defined]


@pytest.mark.parametrize("writer", ["saga", "attempt"])
def test_a_row_written_since_makes_the_step_read_the_saga(writer: str) -> None:
    # given: the saga its first step kept, then a write by someone else
    kept = _first_step_kept(_started())
    if writer == "saga":
        Saga.objects.filter(pk=kept.pk).update(last_error="an operator was here")
    else:
        assert kept.current_attempt_id is not None
        StepAttempt.objects.filter(pk=kept.current_attempt_id).update(
            deliveries=F("deliveries") + 1
        )

    # then: the kept instance is refused
    with transaction.atomic():
        assert machine.relock_saga(kept) is None


def test_a_refused_kept_saga_runs_the_step_from_what_is_stored() -> None:
    # given: a saga kept after its first step, then cancelled by an operator's
    # write (the attempt the worker kept is no longer the one to run)
    saga = _started()
    kept = _first_step_kept(saga)
    attempt_id = kept.current_attempt_id
    assert attempt_id is not None
    StepAttempt.objects.filter(pk=attempt_id).update(status=AttemptStatus.CANCELLED)

    # when: the worker goes on with the attempt it kept
    with machine.continuing(saga.pk):
        outcome = execution._execute(saga.pk, attempt_id, limited=False, kept=kept)

    # then: the stored attempt wins: nothing runs
    assert outcome == "fenced"
    assert StepAttempt.objects.get(pk=attempt_id).status == AttemptStatus.CANCELLED


def test_a_steps_copy_of_the_context_does_not_reach_the_next_step() -> None:
    # given: a first step that changes a nested value in its copy of the data
    # and returns nothing (so nothing of it is stored)
    seen: list[dict[str, Any]] = []

    def change(ctx: StepContext) -> None:
        ctx.data["order"]["lines"].append("added in memory")

    def look(ctx: StepContext) -> None:
        seen.append(dict(ctx.data))

    definition = registry.register(
        SagaDefinition(
            name=f"reuse_{uuid.uuid4().hex[:8]}",
            steps=(
                Step("first", change, kind=StepKind.RETRIABLE),
                Step("second", look, kind=StepKind.RETRIABLE),
            ),
        )
    )
    with transaction.atomic():
        saga = saga_start(
            definition,
            business_key=f"reuse:{uuid.uuid4()}",
            context={"order": {"lines": ["one"]}},
        )
    assert saga.current_attempt_id is not None

    # when: the second step runs inline after the first
    step_execute(saga.pk, saga.current_attempt_id, continue_inline=True)

    # then: it sees what is stored, as it would after a broker hop
    assert seen == [{"order": {"lines": ["one"]}}]
    assert Saga.objects.get(pk=saga.pk).status == SagaStatus.COMPLETED


def test_engine_times_are_djangos_whatever_the_sessions_time_zone() -> None:
    # given: a saga, and a fresh connection whose session time zone is not
    # Django's (psycopg's own loader would label times with that zone)
    saga = _started()
    connection.close()
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/New_York'")
    try:
        # when: the engine and Django's ORM read the saga on that connection
        with transaction.atomic():
            locked = machine.lock_saga(saga.pk)
        djangos = Saga.objects.get(pk=saga.pk).created_at

        # then: the engine reads what Django reads, in Django's time zone
        assert locked is not None
        assert locked.created_at == djangos
        assert locked.created_at.tzinfo is djangos.tzinfo is connection.timezone
    finally:
        connection.close()


def test_engine_times_on_a_utc_session_are_djangos() -> None:
    saga = _started()
    with transaction.atomic():
        locked = machine.lock_saga(saga.pk)
    assert locked is not None
    assert locked.created_at.tzinfo is connection.timezone
    assert writes.XMIN == "row_xmin"


def test_a_new_connection_gets_a_new_engine_cursor_and_drops_the_old() -> None:
    # given: the engine's cursor on the current connection
    saga = _started()
    with transaction.atomic():
        assert machine.lock_saga(saga.pk) is not None
    first = getattr(connection, writes.CURSOR_ATTRIBUTE)
    old = connection.connection

    # when: the connection is replaced (CONN_MAX_AGE, a lost connection)
    connection.close()
    with transaction.atomic():
        assert machine.lock_saga(saga.pk) is not None

    # then: the engine's statements run on the new connection, and nothing
    # of the engine still holds the old one
    current = getattr(connection, writes.CURSOR_ATTRIBUTE)
    assert current is not first
    assert current.cursor.connection is connection.connection is not old
    del first
    gc.collect()
    assert not [r for r in gc.get_referrers(old) if isinstance(r, psycopg.Cursor)]
