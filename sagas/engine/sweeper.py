"""The beat sweeper: due backoffs, lapsed leases and overdue attempts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Least, Now

from sagas import conf, registry
from sagas.dispatch import send_many_on_commit
from sagas.engine.core import SWEEPER, StepTimedOut, _Transaction, _write_events
from sagas.engine.execution import _fail
from sagas.errors import DefinitionError
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    AttemptStatus,
    SagaStatus,
    check_attempt_transition,
)

log = structlog.get_logger("sagas.engine")

# --- sweeping -----------------------------------------------------------------


def sweep(*, batch: int | None = None) -> int:
    """Handle sagas whose wake-up time has come; return how many were handled.

    Dispatch attempts whose backoff is over, re-send attempts whose message was
    not picked up within the lease, and time out attempts past their deadline.
    Rows locked by a worker executing a step are skipped, so any number of
    sweepers may run at once.
    """
    # A bounded batch keeps the transaction short; the next beat tick takes the rest.
    limit = batch or int(conf.get("SAGAS_SWEEP_BATCH"))
    with transaction.atomic():
        sagas = list(
            Saga.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("current_attempt")
            .annotate(db_now=Now())
            .filter(status__in=ACTIVE_SAGA_STATUSES, wake_at__lte=Now())
            .order_by("wake_at")[:limit]
        )
        # Re-sends and due backoffs, the bulk of the work, are written for the
        # whole batch at once; timeouts take the engine's full failure path.
        rest = _send_again(sagas)
        for saga in rest:
            try:
                with transaction.atomic():
                    _wake(saga)
            except Exception:
                log.exception("sweep.saga_failed", saga_id=str(saga.pk))
    return len(sagas)


def _send_again(sagas: Sequence[Saga]) -> list[Saga]:
    """Dispatch due backoffs and re-send lapsed leases, set-based; return the rest.

    Neither counts as progress, so ``updated_at`` (what "stuck" looks at) stays.
    """
    lease = conf.get("SAGAS_DISPATCH_LEASE")
    rest: list[Saga] = []
    # Due backoffs grouped by step timeout (their new deadline); lapsed leases.
    due: dict[float, list[tuple[Saga, StepAttempt]]] = defaultdict(list)
    lapsed: list[tuple[Saga, StepAttempt]] = []
    events: list[SagaEvent] = []
    sends: list[tuple[UUID, int, float]] = []
    now: Any = None
    for saga in sagas:
        now = saga.db_now  # type: ignore[attr-defined]
        attempt = saga.current_attempt
        timeout = _step_timeout(saga, attempt)
        if attempt is None or timeout is None:
            rest.append(saga)
            continue
        if attempt.status == AttemptStatus.SCHEDULED:
            check_attempt_transition(attempt.status, AttemptStatus.DISPATCHED)
            due[timeout].append((saga, attempt))
            new, detail = str(AttemptStatus.DISPATCHED), ""
        elif attempt.status == AttemptStatus.DISPATCHED and attempt.deadline_at > now:
            lapsed.append((saga, attempt))
            new, detail = attempt.status, "re-sent: not finished within the lease"
        else:
            rest.append(saga)
            continue
        events.append(
            SagaEvent(
                saga_id=saga.pk,
                actor=SWEEPER,
                step=attempt.step,
                kind=attempt.kind,
                attempt=attempt.number,
                old_status=attempt.status,
                new_status=new,
                detail=detail,
            )
        )
        sends.append((saga.pk, attempt.pk, timeout))
    for timeout, pairs in due.items():
        StepAttempt.objects.filter(pk__in=[a.pk for _, a in pairs]).update(
            status=AttemptStatus.DISPATCHED,
            dispatches=F("dispatches") + 1,
            dispatched_at=now,
            not_before=None,
            deadline_at=now + timedelta(seconds=timeout),
        )
        Saga.objects.filter(pk__in=[s.pk for s, _ in pairs]).update(
            wake_at=now + timedelta(seconds=min(lease, timeout))
        )
    if lapsed:
        StepAttempt.objects.filter(pk__in=[a.pk for _, a in lapsed]).update(
            dispatches=F("dispatches") + 1
        )
        Saga.objects.filter(pk__in=[s.pk for s, _ in lapsed]).update(
            wake_at=Least(Value(now + timedelta(seconds=lease)), _CURRENT_DEADLINE)
        )
    if sends:
        _write_events(events, {saga.pk: saga.definition for saga in sagas})
        send_many_on_commit(sends)
    return rest


# A correlated subquery written out: the ORM's OuterRef form makes PostgreSQL
# join the whole saga table (a sequential scan over finished sagas too).
_CURRENT_DEADLINE = RawSQL(
    f"(SELECT a.deadline_at FROM {StepAttempt._meta.db_table} a"
    f" WHERE a.id = {Saga._meta.db_table}.current_attempt_id)",
    (),
    output_field=models.DateTimeField(),
)


def _step_timeout(saga: Saga, attempt: StepAttempt | None) -> float | None:
    if attempt is None:
        return None
    try:
        return registry.get(saga.definition).step(attempt.step_index).timeout
    except (DefinitionError, IndexError):
        return None


def _wake(saga: Saga) -> None:
    """Time out an overdue attempt (what ``_send_again`` leaves to the full path)."""
    attempt = saga.current_attempt
    tx = _Transaction(saga, SWEEPER)
    if attempt is None:
        tx.set(wake_at=None)
    else:
        definition = registry.get(saga.definition)
        if saga.status == SagaStatus.PENDING:
            tx.saga_status(SagaStatus.RUNNING)
        step = definition.step(attempt.step_index)
        timed_out = StepTimedOut(f"no result within {step.timeout}s")
        _fail(tx, definition, attempt, timed_out)
    tx.commit()
