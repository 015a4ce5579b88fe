"""The happy path in statements: what one step sends to the database.

Counted with Django's query capture on PostgreSQL, in this process; BEGIN and
COMMIT are counted too (each is a round trip).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from sagas import registry
from sagas.engine import machine, saga_start, step_execute, writes
from sagas.models import Saga, StepAttempt
from sagas.states import SagaStatus
from tests.engine_support import cleanup, define, run_next, start

pytestmark = pytest.mark.django_db(transaction=True)

# Per step: BEGIN, the lock (saga and attempt in one query), one statement
# writing the attempt's result, the next attempt, the saga and the events,
# COMMIT.
STATEMENTS_PER_STEP = 4


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def _statements(saga_id: uuid.UUID, attempt_id: int) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        step_execute(saga_id, attempt_id)
    return [query["sql"] for query in captured.captured_queries]


def test_a_happy_step_takes_one_transaction_of_four_statements() -> None:
    # given: a three-step saga whose first step has run
    definition = define("c", "c", "c")
    with transaction.atomic():
        saga = saga_start(definition, business_key=f"count:{uuid.uuid4()}")
    assert saga.current_attempt_id is not None
    step_execute(saga.pk, saga.current_attempt_id)
    saga.refresh_from_db()
    assert saga.current_attempt_id is not None

    # when: the middle step runs
    statements = _statements(saga.pk, saga.current_attempt_id)

    # then: one transaction, the lock first, nothing read twice
    assert statements[0] == "BEGIN"
    assert statements[-1] == "COMMIT"
    assert statements.count("BEGIN") == 1
    assert "FOR UPDATE" in statements[1]
    assert len(statements) <= STATEMENTS_PER_STEP, statements
    saga.refresh_from_db()
    assert saga.current_step == 2
    assert saga.status == SagaStatus.RUNNING


def test_the_last_step_writes_the_end_in_its_one_statement_before_the_hook() -> None:
    # given: a one-step saga whose on_completed hook reads the engine's rows
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def completed(outcome: Any) -> None:
        saga = Saga.objects.get(pk=outcome.saga_id)
        attempt = StepAttempt.objects.get(saga=saga)
        seen.append((saga.status, attempt.status, dict(outcome.data)))

    definition = registry.register(
        replace(
            define("c"),
            name=f"hooked_{uuid.uuid4().hex[:8]}",
            on_completed=completed,
            sensitive=("token",),
        )
    )
    with transaction.atomic():
        saga = saga_start(
            definition, business_key=f"count:{uuid.uuid4()}", context={"token": "t"}
        )
    assert saga.current_attempt_id is not None

    # when
    statements = _statements(saga.pk, saga.current_attempt_id)

    # then: the hook's two reads are the only statements beside the step's
    # four; it saw the saga ended and was told the context as the step had it
    hook_reads = [sql for sql in statements if sql.startswith("SELECT")][1:]
    assert len(hook_reads) == 2
    assert len(statements) == STATEMENTS_PER_STEP + len(hook_reads), statements
    assert seen == [
        (SagaStatus.COMPLETED, "succeeded", {"token": "t", "step_1_done": True})
    ]
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPLETED
    assert saga.context["token"] == "[scrubbed]"


def test_the_lock_reads_the_saga_and_its_attempt_as_the_orm_would() -> None:
    # given: a saga with a context and a dispatched first attempt
    definition = define("c", "c")
    with transaction.atomic():
        started = saga_start(
            definition,
            business_key=f"lock:{uuid.uuid4()}",
            context={"order": {"lines": [1, 2]}, "note": "ü"},
        )

    # when: it is locked
    with transaction.atomic():
        locked = machine.lock_saga(str(started.pk))
        missing = machine.lock_saga(uuid.uuid4())

    # then: every field matches the ORM's reading, with the database time
    assert locked is not None
    assert missing is None
    expected = Saga.objects.select_related("current_attempt").get(pk=started.pk)
    for field in Saga._meta.concrete_fields:
        assert getattr(locked, field.attname) == getattr(expected, field.attname)
    assert locked.current_attempt is not None
    for field in StepAttempt._meta.concrete_fields:
        assert getattr(locked.current_attempt, field.attname) == getattr(
            expected.current_attempt, field.attname
        )
    assert abs(locked.db_now.timestamp() - time.time()) < 60  # type: ignore[attr-defined]
    assert not locked._state.adding
    assert locked._state.db == "default"


def test_saving_fields_writes_values_and_database_expressions_like_save() -> None:
    # given: a saga with new context, a database-time wake-up and no attempt
    definition = define("c")
    with transaction.atomic():
        saga = saga_start(definition, business_key=f"save:{uuid.uuid4()}")
    saga.context = {"paid": True, "lines": [1]}
    saga.wake_at = machine.db_in(3600)  # type: ignore[assignment]
    saga.current_attempt = None

    # when: those fields are written
    machine.save_fields(saga, ["context", "wake_at", "current_attempt"])

    # then: they read back as written, the wake-up an hour after the database's now
    stored = Saga.objects.get(pk=saga.pk)
    assert stored.context == {"paid": True, "lines": [1]}
    assert stored.current_attempt_id is None
    assert stored.wake_at is not None
    assert 3500 < stored.wake_at.timestamp() - time.time() < 3700


def test_saving_fields_of_a_missing_row_is_an_error() -> None:
    # given: a saga that was never inserted
    saga = Saga(definition="none", version=1, business_key="missing")

    # when / then
    with pytest.raises(DatabaseError):
        machine.save_fields(saga, ["context"])


def test_a_start_writes_the_saga_once_with_its_first_attempt() -> None:
    # given
    definition = define("c", "c")

    # when: a saga starts in its own transaction
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        saga = saga_start(definition, business_key=f"start:{uuid.uuid4()}")
    statements = [query["sql"] for query in captured.captured_queries]

    # then: BEGIN, one statement inserting the attempt, the saga and the
    # events, COMMIT; nothing updated
    assert len(statements) == 3, statements
    assert not [sql for sql in statements if sql.startswith("UPDATE")]
    stored = Saga.objects.select_related("current_attempt").get(pk=saga.pk)
    assert stored.status == SagaStatus.PENDING
    assert stored.current_attempt is not None
    assert stored.current_attempt.status == "dispatched"
    assert stored.wake_at is not None


def test_rows_kept_for_one_statement_are_written_once_with_their_last_values() -> None:
    # given: a saga, and a batch that changes its row twice and adds an event
    definition = define("c")
    with transaction.atomic():
        saga = saga_start(definition, business_key=f"batch:{uuid.uuid4()}")
    batch = writes.Batch()
    saga.last_error = "first"
    batch.update(saga, ["last_error"])
    saga.last_error = "second"
    saga.failed_step = "step_1"
    batch.update(saga, ["failed_step"])
    called: list[int] = []
    batch.then(lambda: called.append(1))

    # when
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        batch.flush()

    # then: one statement wrote both fields, the callback ran after it
    writes_sent = [q["sql"] for q in captured.captured_queries if "UPDATE" in q["sql"]]
    assert len(writes_sent) == 1, writes_sent
    stored = Saga.objects.get(pk=saga.pk)
    assert (stored.last_error, stored.failed_step) == ("second", "step_1")
    assert called == [1]


def test_a_kept_update_of_a_missing_row_is_an_error() -> None:
    # given: a saga that was never inserted
    batch = writes.Batch()
    batch.update(Saga(definition="none", version=1, business_key="gone"), ["context"])

    # when / then
    with pytest.raises(DatabaseError), transaction.atomic():
        batch.flush()


def test_compensation_reads_the_failed_attempt_written_in_its_own_transaction() -> None:
    # given: a saga whose second step fails half done after the first succeeded
    definition = define("c", "c")
    with transaction.atomic():
        saga = start(definition, plan={"step_2:action": ["partial"]})

    # when: both steps run, then the compensations
    for _ in range(4):
        run_next(saga.pk)

    # then: the partly done step is compensated before the first, as the
    # compensation order is read from attempts written in the same transaction
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATED
    compensations = list(
        StepAttempt.objects.filter(saga=saga, kind="compensation")
        .order_by("id")
        .values_list("step", flat=True)
    )
    assert compensations == ["step_2", "step_1"]


@pytest.mark.parametrize("prepared", [1, 0])
def test_prepared_statements_follow_the_setting(prepared: int, settings: Any) -> None:
    # given: the setting, and a two-step saga on a fresh connection
    settings.SAGAS_PREPARED_STATEMENTS = prepared
    connection.close()
    definition = define("c", "c")
    with transaction.atomic():
        saga = saga_start(definition, business_key=f"prep:{uuid.uuid4()}")

    # when: both steps run
    run_next(saga.pk)
    run_next(saga.pk)

    # then: the saga completed either way; only with the setting on did this
    # connection keep the step path's statements prepared on the server
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPLETED
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        row = cursor.fetchone()
    assert row is not None
    assert (row[0] > 0) == bool(prepared)


def test_a_query_the_orm_repeats_is_prepared_on_the_server() -> None:
    # DATABASE_PREPARED_STATEMENTS (on unless set false): Django binds the
    # parameters on the server and psycopg prepares a statement once it has
    # run 5 times on a connection.
    connection.close()
    for _ in range(6):
        Saga.objects.filter(business_key="prepared-by-the-orm").exists()

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('"business_key" = $2' in statement for statement in prepared), prepared


def test_events_kept_for_one_statement_keep_their_text_and_order() -> None:
    # given: events whose text a hand-made literal would get wrong
    saga = start(define("c"))
    details = ['quote " and \\ backslash', "naïve — ünïcode ✓", "line\nbreak", ""]
    events = [
        writes.Event(
            saga_id=saga.pk,
            actor="operator:ada",
            new_status="running",
            step="step_1" if i % 2 else "",
            attempt=i or None,
            detail=detail,
        )
        for i, detail in enumerate(details)
    ]

    # when: written with the deferred batch, in one statement
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        batch = writes.Batch()
        batch.add_events(events)
        batch.flush()

    # then
    assert len(captured.captured_queries) == 1
    stored = list(
        saga.events.filter(actor="operator:ada")
        .order_by("id")
        .values_list("detail", "step", "attempt", "old_status", "created_at")
    )
    assert [row[:4] for row in stored] == [
        (detail, "step_1" if i % 2 else "", i or None, "")
        for i, detail in enumerate(details)
    ]
    assert all(row[4] is not None for row in stored)
