"""A django-ninja router for staff: a saga with its steps, attempts and timeline.

Every read needs an active staff user holding ``sagas.view_saga``, the same
permission the admin asks for; sensitive context keys are redacted.
Attempts and events are paged (``limit``/``offset``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.security import SessionAuth

from sagas.models import Saga, SagaEvent
from sagas.redaction import redacted_context
from sagas.selectors import (
    StepSummary,
    saga_attempts,
    saga_timeline,
    step_summaries,
)

VIEW_PERMISSION = "sagas.view_saga"
# Rows per page when the client does not say; the most it may ask for.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class SagaViewerAuth(SessionAuth):
    """Django session auth admitting active staff users who may view sagas."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if user is None:
            return None
        if not (user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION)):
            raise HttpError(403, f"requires the {VIEW_PERMISSION} permission")
        return user


class ErrorOut(Schema):
    detail: str
    errors: list[dict[str, Any]] = []


class StepOut(Schema):
    name: str
    status: str
    attempts: int
    compensation: str
    compensation_attempts: int


class AttemptOut(Schema):
    step: str
    kind: str
    number: int
    status: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    dispatches: int
    deliveries: int
    error: str
    error_type: str


class EventOut(Schema):
    at: datetime | None
    actor: str
    step: str
    kind: str
    attempt: int | None
    old_status: str
    new_status: str
    detail: str

    @staticmethod
    def resolve_at(event: SagaEvent) -> datetime | None:
        return event.created_at


class SagaOut(Schema):
    id: UUID
    definition: str
    version: int
    business_key: str
    status: str
    context: dict[str, Any]
    current_step: int
    failed_step: str
    error: str
    last_error: str
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut]
    attempts_count: int = Field(description="All attempts; `attempts` is page one.")
    attempts: list[AttemptOut]
    timeline_count: int = Field(description="All events; `timeline` is page one.")
    timeline: list[EventOut]

    @staticmethod
    def resolve_context(saga: Saga) -> dict[str, Any]:
        # Keys the definition declares sensitive are hidden from every reader.
        return redacted_context(saga.definition, saga.context)

    @staticmethod
    def resolve_steps(saga: Saga) -> list[StepSummary]:
        return step_summaries(saga)

    @staticmethod
    def resolve_attempts_count(saga: Saga) -> int:
        return saga_attempts(saga.pk).count()

    @staticmethod
    def resolve_attempts(saga: Saga) -> QuerySet[Any]:
        return saga_attempts(saga.pk)[:PAGE_SIZE]

    @staticmethod
    def resolve_timeline_count(saga: Saga) -> int:
        return saga_timeline(saga.pk).count()

    @staticmethod
    def resolve_timeline(saga: Saga) -> QuerySet[Any]:
        return saga_timeline(saga.pk)[:PAGE_SIZE]


class PageIn(Schema):
    limit: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(0, ge=0, le=2**31 - 1)


class AttemptPage(Schema):
    count: int
    items: list[AttemptOut]


class EventPage(Schema):
    count: int
    items: list[EventOut]


_ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 503: ErrorOut}

router = Router(tags=["sagas"], auth=SagaViewerAuth())


def _require_saga(saga_id: UUID) -> None:
    if not Saga.objects.filter(pk=saga_id).exists():
        raise HttpError(404, "saga not found")


def _page(queryset: QuerySet[Any], page: PageIn) -> dict[str, Any]:
    return {
        "count": queryset.count(),
        "items": queryset[page.offset : page.offset + page.limit],
    }


@router.get(
    "/{uuid:saga_id}/", response={200: SagaOut, **_ERRORS}, url_name="saga-detail"
)
def get_saga(request: HttpRequest, saga_id: UUID) -> Saga:
    """Return a saga with its steps and first page of attempts and timeline."""
    saga = Saga.objects.filter(pk=saga_id).first()
    if saga is None:
        raise HttpError(404, "saga not found")
    return saga


@router.get(
    "/{uuid:saga_id}/attempts/",
    response={200: AttemptPage, 400: ErrorOut, **_ERRORS},
    url_name="saga-attempts",
)
def list_attempts(
    request: HttpRequest, saga_id: UUID, page: Query[PageIn]
) -> dict[str, Any]:
    """Return a page of the saga's step attempts, oldest first."""
    _require_saga(saga_id)
    return _page(saga_attempts(saga_id), page)


@router.get(
    "/{uuid:saga_id}/timeline/",
    response={200: EventPage, 400: ErrorOut, **_ERRORS},
    url_name="saga-timeline",
)
def list_events(
    request: HttpRequest, saga_id: UUID, page: Query[PageIn]
) -> dict[str, Any]:
    """Return a page of the saga's timeline events, oldest first."""
    _require_saga(saga_id)
    return _page(saga_timeline(saga_id), page)
