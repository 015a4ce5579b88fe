"""The engine's transition lines: built only when INFO is on, while a saga parked
for an operator is logged as an error at any level."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from sagas import signals
from sagas.engine import machine
from sagas.states import SagaStatus


def _line(new_status: str, kind: str = "") -> dict[str, Any]:
    return {
        "saga_id": str(uuid.uuid4()),
        "definition": "order_fulfilment",
        "version": 1,
        "step": "" if not kind else "reserve_stock",
        "kind": kind,
        "attempt": 1 if kind else None,
        "old_status": SagaStatus.COMPENSATING,
        "new_status": new_status,
        "actor": "engine",
        "detail": "",
        "age": 0.5,
    }


@pytest.fixture
def engine_level() -> Iterator[logging.Logger]:
    logger = logging.getLogger("sagas.engine")
    before = logger.level
    yield logger
    logger.setLevel(before)


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_a_parked_saga_is_an_error_line_whatever_the_level(
    engine_level: logging.Logger, level: int
) -> None:
    # given: the engine's logger at INFO, or above it as in production
    engine_level.setLevel(level)
    parked = _line(SagaStatus.FAILED)
    step = _line(SagaStatus.RUNNING, kind="action")

    heard: list[str] = []

    def receiver(sender: Any, **line: Any) -> None:
        heard.append(line["saga_id"])

    signals.saga_transition.connect(receiver, weak=False)

    # when: a step's transition and the saga's parking are announced
    try:
        with capture_logs() as logs:
            machine._announce([step, parked])
    finally:
        signals.saga_transition.disconnect(receiver)

    # then: the parking is an error line naming the saga; the step's line only at INFO
    events = [(log["event"], log["log_level"], log["saga_id"]) for log in logs]
    expected = [("saga.needs_operator", "error", parked["saga_id"])]
    if level == logging.INFO:
        expected.insert(0, ("saga.transition", "info", step["saga_id"]))
    assert events == expected
    # and: receivers (the metrics) hear both at any level
    assert heard == [step["saga_id"], parked["saga_id"]]
