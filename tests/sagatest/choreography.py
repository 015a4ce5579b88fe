"""A choreographed flow for the tracker's tests: nobody answers its events."""

from __future__ import annotations

from sagas.events.flows import register_flow

SILENT_FLOW = "test_silent_flow"

register_flow(
    SILENT_FLOW,
    completed={"test.finished"},
    compensating={"test.failing"},
    compensated={"test.failed"},
    timeout=1,
)
