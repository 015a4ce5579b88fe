"""Declaring flow types: which events finish a flow, and how.

Plain data, no database: the tracker derives a flow's status from the set of
event types seen for it, so the order in which they arrive does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sagas.errors import DefinitionError
from sagas.events.models import FlowStatus


@dataclass(frozen=True)
class FlowType:
    """A choreographed flow: its outcome events and its stuck timeout (seconds)."""

    name: str
    completed: frozenset[str] = field(default_factory=frozenset)
    compensating: frozenset[str] = field(default_factory=frozenset)
    compensated: frozenset[str] = field(default_factory=frozenset)
    timeout: float | None = None

    def status(self, seen: Iterable[str]) -> FlowStatus:
        """Return the status a flow has once it has seen ``seen`` event types."""
        types = set(seen)
        if types & self.completed:
            return FlowStatus.COMPLETED
        if types & self.compensated:
            return FlowStatus.COMPENSATED
        if types & self.compensating:
            return FlowStatus.COMPENSATING
        return FlowStatus.RUNNING


_flows: dict[str, FlowType] = {}


def register_flow(
    name: str,
    *,
    completed: Iterable[str],
    compensated: Iterable[str],
    compensating: Iterable[str] = (),
    timeout: float | None = None,
) -> FlowType:
    """Declare a flow type; registering the same declaration again is a no-op."""
    flow = FlowType(
        name=name,
        completed=frozenset(completed),
        compensating=frozenset(compensating),
        compensated=frozenset(compensated),
        timeout=timeout,
    )
    if not flow.completed or not flow.compensated:
        raise DefinitionError(f"flow {name!r} needs completion and failure events")
    if flow.completed & (flow.compensated | flow.compensating):
        raise DefinitionError(f"flow {name!r}: an event cannot both finish and fail it")
    existing = _flows.get(name)
    if existing is not None and existing != flow:
        raise DefinitionError(f"flow {name!r} is already registered differently")
    _flows[name] = flow
    return flow


def find_flow(name: str) -> FlowType | None:
    """Return the flow type ``name``, or None if it was never declared."""
    return _flows.get(name)


def flow_names() -> list[str]:
    """Return the declared flow type names, sorted."""
    return sorted(_flows)
