"""Read queries over choreographed flows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sagas.events.models import Flow


def flow_summary(flow_id: UUID | str) -> dict[str, Any] | None:
    """Return a flow's status and timeline (event types, oldest first), or None."""
    flow = Flow.objects.filter(pk=flow_id).first()
    if flow is None:
        return None
    events = flow.events.order_by("occurred_at", "id").values(
        "event_type", "event_id", "occurred_at"
    )
    return {
        "id": flow.pk,
        "flow_type": flow.flow_type,
        "status": flow.status,
        "events": list(events),
    }
