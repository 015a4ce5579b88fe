"""A django-ninja router for staff: ``GET /sagas/<id>/`` with steps and timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.security import SessionAuth

from sagas.selectors import saga_detail


class StaffSessionAuth(SessionAuth):
    """Django session auth that admits staff users only."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if user is None:
            return None
        if not user.is_staff:
            raise HttpError(403, "staff only")
        return user


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
    attempts: list[AttemptOut]
    timeline: list[EventOut]


router = Router(tags=["sagas"], auth=StaffSessionAuth())


@router.get("/{uuid:saga_id}/", response=SagaOut, url_name="saga-detail")
def get_saga(request: HttpRequest, saga_id: UUID) -> dict[str, object]:
    """Return a saga with its steps, attempts and timeline (staff only)."""
    detail = saga_detail(saga_id)
    if detail is None:
        raise HttpError(404, "saga not found")
    return detail
