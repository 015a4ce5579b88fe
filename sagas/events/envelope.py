"""The event as it travels: a JSON envelope, and the event being handled now."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

# Bump when a field changes meaning; consumers in other services read it.
ENVELOPE_VERSION = 1


@dataclass(frozen=True)
class Event:
    """One event: its own id, its type, the flow it belongs to, and its data."""

    event_id: UUID
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime
    correlation_id: UUID | None = None
    flow_type: str = ""
    flow_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_envelope(self) -> dict[str, Any]:
        """Return the JSON-ready message body every consumer receives."""
        return {
            "version": ENVELOPE_VERSION,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "correlation_id": str(self.correlation_id) if self.correlation_id else None,
            "flow_type": self.flow_type,
            "flow_key": self.flow_key,
            "occurred_at": self.occurred_at.isoformat(),
            "payload": self.payload,
        }

    @classmethod
    def from_envelope(cls, body: dict[str, Any]) -> Event:
        """Read an envelope; raise ValueError (or KeyError) when it is malformed."""
        correlation = body.get("correlation_id")
        payload = body.get("payload") or {}
        if not isinstance(payload, dict):
            raise ValueError("payload must be a JSON object")
        return cls(
            event_id=UUID(str(body["event_id"])),
            event_type=str(body["event_type"]),
            payload=payload,
            occurred_at=datetime.fromisoformat(str(body["occurred_at"])),
            correlation_id=UUID(str(correlation)) if correlation else None,
            flow_type=str(body.get("flow_type") or ""),
            flow_key=str(body.get("flow_key") or ""),
        )


# The event a handler is running for: what ``publish`` correlates new events to.
current_event: ContextVar[Event | None] = ContextVar("current_event", default=None)
