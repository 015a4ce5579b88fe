"""What each committed transition counts, from the receivers of sagas.signals."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from sagas import signals
from sagas.models import Saga


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _transition(**fields: Any) -> None:
    event = {
        "saga_id": "00000000-0000-0000-0000-000000000000",
        "definition": "receiver_test",
        "version": None,
        "step": "charge",
        "kind": "action",
        "attempt": 1,
        "old_status": "",
        "new_status": "dispatched",
        "actor": "engine",
        "detail": "",
        **fields,
    }
    signals.saga_transition.send_robust(Saga, **event)


def test_sweeper_resend_counts_a_resend_not_an_attempt() -> None:
    labels = {"definition": "receiver_test", "step": "charge", "kind": "action"}
    before = _value("sagas_step_resends_total", **labels)

    _transition(
        old_status="dispatched",
        actor="sweeper",
        detail="re-sent: not finished within the lease",
    )

    assert _value("sagas_step_resends_total", **labels) == before + 1
    assert _value("sagas_step_attempts_total", **labels, outcome="dispatched") == 0


def test_second_attempt_counts_a_retry_and_a_timeout_an_outcome() -> None:
    labels = {"definition": "receiver_test", "step": "charge", "kind": "action"}
    retries = _value("sagas_step_retries_total", **labels)
    timeouts = _value("sagas_step_attempts_total", **labels, outcome="timed_out")

    _transition(old_status="dispatched", new_status="timed_out", actor="sweeper")
    _transition(attempt=2)
    _transition(attempt=1)  # a first attempt is no retry

    assert _value("sagas_step_retries_total", **labels) == retries + 1
    assert (
        _value("sagas_step_attempts_total", **labels, outcome="timed_out")
        == timeouts + 1
    )


@pytest.mark.django_db
def test_parked_saga_counts_parked_and_finished_failed() -> None:
    labels = {"definition": "receiver_test"}
    parked = _value("sagas_parked_total", **labels)
    failed = _value("sagas_finished_total", **labels, status="failed")

    _transition(step="", kind="", attempt=None, old_status="compensating",
                new_status="failed")  # fmt: skip

    assert _value("sagas_parked_total", **labels) == parked + 1
    assert _value("sagas_finished_total", **labels, status="failed") == failed + 1
