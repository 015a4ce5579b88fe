"""Helpers for test suites of projects that choreograph flows by events."""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import UUID

from sagas.events.models import Flow, FlowStatus

TERMINAL_FLOW_STATUSES = (FlowStatus.COMPLETED, FlowStatus.COMPENSATED)


def wait_for_flows(
    flow_ids: Iterable[UUID | str],
    *,
    timeout: float = 30.0,
    statuses: Iterable[str] = TERMINAL_FLOW_STATUSES,
    poll: float = 0.1,
) -> list[Flow]:
    """Wait until every flow is in one of ``statuses``; return them in order.

    Raise AssertionError naming the flows still elsewhere when time runs out.
    """
    wanted = [str(flow_id) for flow_id in flow_ids]
    targets = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        flows = {str(f.pk): f for f in Flow.objects.filter(pk__in=wanted)}
        waiting = [
            fid
            for fid in wanted
            if fid not in flows or flows[fid].status not in targets
        ]
        if not waiting:
            return [flows[fid] for fid in wanted]
        if time.monotonic() > deadline:
            summary = ", ".join(
                f"{fid}={flows[fid].status}/{flows[fid].last_event_type}"
                if fid in flows
                else f"{fid}=missing"
                for fid in waiting[:10]
            )
            raise AssertionError(
                f"{len(waiting)} of {len(wanted)} flows not in {sorted(targets)} "
                f"after {timeout}s: {summary}"
            )
        time.sleep(poll)


def timeline(flow_id: UUID | str) -> list[str]:
    """Return a flow's event types as the tracker recorded them, oldest first."""
    return list(
        Flow.objects.get(pk=flow_id)
        .events.order_by("occurred_at", "id")
        .values_list("event_type", flat=True)
    )
