"""Read queries over sagas: stuck sagas, timelines, step summaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from sagas import conf, registry
from sagas.errors import DefinitionError
from sagas.models import Saga, SagaEvent, StepAttempt, SweeperHeartbeat
from sagas.schedule import HEARTBEAT
from sagas.states import ACTIVE_SAGA_STATUSES, AttemptKind, AttemptStatus, SagaStatus


def stuck_sagas(*, older_than: float | None = None) -> QuerySet[Saga]:
    """Return failed sagas and active ones idle for ``older_than`` seconds."""
    seconds = older_than if older_than is not None else conf.get("SAGAS_STUCK_AFTER")
    cutoff = timezone.now() - timedelta(seconds=seconds)
    return Saga.objects.filter(
        Q(status__in=ACTIVE_SAGA_STATUSES, updated_at__lt=cutoff)
        | Q(status=SagaStatus.FAILED)
    )


def stuck_reason(saga: Saga, *, now: datetime | None = None) -> str:
    """Say why ``saga`` counts as stuck, or return "" when it does not.

    Reads only the saga and its current attempt (``select_related`` it).
    """
    if saga.status == SagaStatus.FAILED:
        cause = (saga.last_error or saga.error or "no error recorded").splitlines()[0]
        return f"parked failed, an operator must act: {cause[:120]}"
    if saga.status not in ACTIVE_SAGA_STATUSES:
        return ""
    idle = ((now or timezone.now()) - saga.updated_at).total_seconds()
    if idle < conf.get("SAGAS_STUCK_AFTER"):
        return ""
    since = f"no progress for {_duration(idle)}"
    attempt = saga.current_attempt
    if attempt is None:
        return f"{since}; no current step attempt"
    where = f"{attempt.step} {attempt.kind} #{attempt.number}"
    if attempt.status == AttemptStatus.SCHEDULED:
        return f"{since}; {where} waits for its retry backoff (the sweeper sends it)"
    if attempt.status == AttemptStatus.DISPATCHED:
        return (
            f"{since}; {where} sent {attempt.dispatches}x, no worker has finished it "
            f"(the sweeper re-sends it after the lease, times it out at its deadline)"
        )
    return f"{since}; {where} is {attempt.status}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class SweeperHealth:
    """When the sweeper last ran, and whether its silence puts sagas at risk."""

    last_sweep_at: datetime | None
    # By the database clock; None when no sweep has ever run.
    seconds_since: float | None
    stale_after: float
    active_sagas: bool

    @property
    def silent(self) -> bool:
        """Return whether no sweep has run within ``stale_after`` seconds."""
        return self.seconds_since is None or self.seconds_since > self.stale_after

    @property
    def alarming(self) -> bool:
        """Return whether live sagas depend on a sweeper that is not running."""
        return self.silent and self.active_sagas

    def describe(self) -> str:
        """Say in one sentence how long the sweeper has been silent."""
        if self.seconds_since is None:
            return "no saga sweep has ever run"
        return f"no saga sweep has run for {_duration(self.seconds_since)}"


def sweeper_health(*, active_sagas: bool | None = None) -> SweeperHealth:
    """Return the sweeper's heartbeat against the database clock.

    Pass ``active_sagas`` when already known (e.g. from ``status_counts``).
    """
    row = (
        SweeperHeartbeat.objects.filter(name=HEARTBEAT)
        .annotate(db_now=Now())
        .values("swept_at", "db_now")
        .first()
    )
    since = (row["db_now"] - row["swept_at"]).total_seconds() if row else None
    return SweeperHealth(
        last_sweep_at=row["swept_at"] if row else None,
        seconds_since=since,
        stale_after=conf.sweep_stale_after(),
        active_sagas=(
            Saga.objects.filter(status__in=ACTIVE_SAGA_STATUSES).exists()
            if active_sagas is None
            else active_sagas
        ),
    )


def saga_timeline(saga_id: UUID | str) -> QuerySet[SagaEvent]:
    """Return a saga's events, oldest first."""
    return SagaEvent.objects.filter(saga_id=saga_id).order_by("id")


def status_counts() -> dict[str, int]:
    """Return the number of sagas per status."""
    rows = Saga.objects.order_by().values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


@dataclass(frozen=True)
class StepSummary:
    name: str
    status: str
    attempts: int
    compensation: str
    compensation_attempts: int


def step_summaries(saga: Saga) -> list[StepSummary]:
    """Return one summary per step of the saga's definition, in definition order.

    A step's status is its latest action attempt's; ``not_started`` when none.
    """
    attempts = list(
        StepAttempt.objects.filter(saga=saga)
        .order_by("id")
        .values_list("step", "kind", "status")
    )
    latest: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    for step, kind, status in attempts:
        latest[(step, kind)] = status
        counts[(step, kind)] = counts.get((step, kind), 0) + 1
    try:
        definition = registry.get(saga.definition, saga.version)
        names = [step.name for step in definition.steps]
    except DefinitionError:
        # A definition removed from the code: show the steps that ran.
        names = list(dict.fromkeys(step for step, _, _ in attempts))
    action, compensation = AttemptKind.ACTION, AttemptKind.COMPENSATION
    return [
        StepSummary(
            name=name,
            status=latest.get((name, action), "not_started"),
            attempts=counts.get((name, action), 0),
            compensation=latest.get((name, compensation), ""),
            compensation_attempts=counts.get((name, compensation), 0),
        )
        for name in names
    ]


def saga_summary(saga_id: UUID | str) -> dict[str, object] | None:
    """Return a saga's status and per-step summary as plain data, or None."""
    saga = Saga.objects.filter(pk=saga_id).first()
    if saga is None:
        return None
    return {
        "id": saga.pk,
        "definition": saga.definition,
        "status": saga.status,
        "steps": [summary.__dict__ for summary in step_summaries(saga)],
    }


def saga_attempts(saga_id: UUID | str) -> QuerySet[StepAttempt]:
    """Return a saga's step attempts, oldest first."""
    return StepAttempt.objects.filter(saga_id=saga_id).order_by("id")


@dataclass(frozen=True)
class VersionInFlight:
    definition: str
    version: int
    active: int
    failed: int
    # False when the code no longer has this version: its sagas cannot move.
    in_code: bool
    retired: bool


def versions_in_flight() -> list[VersionInFlight]:
    """Return each (definition, version) with active or parked sagas, and in code.

    Registered versions with none in flight are listed too, with zero counts,
    so a retired version that has drained shows that it can be removed.
    """
    counts: dict[tuple[str, int], dict[str, int]] = {}
    rows = (
        Saga.objects.filter(status__in=(*ACTIVE_SAGA_STATUSES, SagaStatus.FAILED))
        .order_by()
        .values_list("definition", "version", "status")
        .annotate(n=Count("id"))
    )
    for name, version, status, n in rows:
        bucket = counts.setdefault((name, version), {"active": 0, "failed": 0})
        bucket["failed" if status == SagaStatus.FAILED else "active"] += n
    for definition in registry.definitions():
        counts.setdefault(
            (definition.name, definition.version), {"active": 0, "failed": 0}
        )
    result = []
    for (name, version), bucket in sorted(counts.items()):
        found = registry.find(name, version)
        result.append(
            VersionInFlight(
                definition=name,
                version=version,
                active=bucket["active"],
                failed=bucket["failed"],
                in_code=found is not None,
                retired=bool(found and found.retired),
            )
        )
    return result
