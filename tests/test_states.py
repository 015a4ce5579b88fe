"""The transition tables, without a database."""

from __future__ import annotations

import pytest

from sagas.errors import IllegalTransition
from sagas.states import (
    ATTEMPT_TRANSITIONS,
    SAGA_TRANSITIONS,
    TERMINAL_SAGA_STATUSES,
    AttemptStatus,
    SagaStatus,
    check_attempt_transition,
    check_saga_transition,
)


def test_every_status_has_a_row() -> None:
    assert set(SAGA_TRANSITIONS) == set(SagaStatus.values)
    assert set(ATTEMPT_TRANSITIONS) == set(AttemptStatus.values)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SagaStatus.PENDING, SagaStatus.RUNNING),
        (SagaStatus.RUNNING, SagaStatus.COMPLETED),
        (SagaStatus.RUNNING, SagaStatus.COMPENSATING),
        (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED),
        (SagaStatus.COMPENSATING, SagaStatus.FAILED),
        (SagaStatus.FAILED, SagaStatus.COMPENSATING),
        (SagaStatus.FAILED, SagaStatus.RESOLVED),
    ],
)
def test_allowed_saga_transitions_pass(old: str, new: str) -> None:
    check_saga_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SagaStatus.COMPLETED, SagaStatus.COMPENSATING),
        (SagaStatus.COMPENSATED, SagaStatus.RUNNING),
        (SagaStatus.COMPENSATING, SagaStatus.RUNNING),
        (SagaStatus.COMPENSATING, SagaStatus.COMPLETED),
        (SagaStatus.PENDING, SagaStatus.COMPLETED),
        (SagaStatus.RESOLVED, SagaStatus.FAILED),
    ],
)
def test_illegal_saga_transitions_raise(old: str, new: str) -> None:
    with pytest.raises(IllegalTransition):
        check_saga_transition(old, new)


def test_terminal_statuses_go_nowhere_except_failed() -> None:
    for status in TERMINAL_SAGA_STATUSES:
        if status == SagaStatus.FAILED:
            continue
        assert SAGA_TRANSITIONS[status] == frozenset()


def test_finished_attempts_never_change() -> None:
    for status in (
        AttemptStatus.SUCCEEDED,
        AttemptStatus.FAILED,
        AttemptStatus.TIMED_OUT,
    ):
        with pytest.raises(IllegalTransition):
            check_attempt_transition(status, AttemptStatus.DISPATCHED)
