"""The engine's transition lines: built only when INFO is on, while a saga parked
for an operator is logged as an error at any level; announced after everything
else a transaction has to do once it commits."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from structlog.testing import capture_logs

from sagas import dispatch, registry, signals
from sagas.definition import SagaDefinition, SagaOutcome, Step, StepKind
from sagas.engine import machine, saga_start, step_execute
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


@pytest.fixture
def heard() -> Iterator[list[str]]:
    """What happened after commit, in order: messages sent, transitions heard."""
    order: list[str] = []

    def receiver(sender: Any, **line: Any) -> None:
        order.append(f"announced {line['new_status']}")

    signals.saga_transition.connect(receiver, weak=False, dispatch_uid="heard")
    yield order
    signals.saga_transition.disconnect(dispatch_uid="heard")


@pytest.mark.django_db(transaction=True)
def test_a_started_sagas_message_leaves_before_its_start_is_announced(
    heard: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: step messages recorded instead of sent
    monkeypatch.setattr(
        dispatch, "send_many", lambda sends: heard.append(f"sent {len(sends)}")
    )

    # when: a saga starts in the caller's transaction
    with transaction.atomic():
        saga_start("test_four_steps", business_key=f"order:{uuid.uuid4()}")

    # then: its first step's message went first, its transitions after it
    assert heard == ["sent 1", "announced pending", "announced dispatched"]


@pytest.mark.django_db(transaction=True)
def test_a_definitions_commit_work_runs_before_the_end_is_announced(
    heard: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a one-step saga whose on_completed hook has work for after commit
    monkeypatch.setattr(dispatch, "send_many", lambda sends: None)

    def completed(outcome: SagaOutcome) -> None:
        transaction.on_commit(lambda: heard.append("hook's work"))

    definition = registry.register(
        SagaDefinition(
            name=f"announced_last_{uuid.uuid4().hex[:8]}",
            steps=(Step("only", lambda ctx: None, kind=StepKind.RETRIABLE),),
            on_completed=completed,
        )
    )
    try:
        with transaction.atomic():
            saga = saga_start(definition, business_key=f"order:{uuid.uuid4()}")
        heard.clear()
        attempt_id = saga.current_attempt_id
        assert attempt_id is not None

        # when: its step runs and ends the saga
        assert step_execute(saga.pk, attempt_id) == "succeeded"
    finally:
        registry.unregister(definition.name, definition.version)

    # then: the hook's work ran first, then the step's and the saga's transitions
    assert heard == [
        "hook's work",
        "announced running",
        "announced succeeded",
        "announced completed",
    ]
