"""Registering a definition validates it; no database needed."""

from __future__ import annotations

import pytest

from sagas.definition import RetryPolicy, SagaDefinition, Step, StepKind
from sagas.errors import DefinitionError
from sagas.registry import get, register, unregister


def _noop(ctx: object) -> None:
    return None


def test_valid_definition_registers() -> None:
    definition = SagaDefinition(
        name="valid_saga",
        steps=(
            Step("reserve", _noop, compensation=_noop),
            Step("commit", _noop, kind=StepKind.PIVOT),
            Step("notify", _noop, kind=StepKind.RETRIABLE, retry=RetryPolicy(None)),
        ),
    )
    try:
        assert register(definition) is definition
    finally:
        unregister("valid_saga")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            (
                Step("a", _noop, compensation=_noop),
                Step("a", _noop, compensation=_noop),
            ),
            "duplicate step name",
        ),
        ((Step("a", _noop),), "a compensatable step needs a compensation"),
        (
            (
                Step("notify", _noop, kind=StepKind.RETRIABLE),
                Step("charge", _noop, compensation=_noop),
            ),
            "a compensatable step after the pivot",
        ),
        (
            (
                Step("p", _noop, kind=StepKind.PIVOT),
                Step("c", _noop, compensation=_noop),
            ),
            "a compensatable step after the pivot",
        ),
        (
            (Step("p", _noop, kind=StepKind.PIVOT, compensation=_noop),),
            "a pivot cannot have a compensation",
        ),
        (
            (Step("r", _noop, kind=StepKind.RETRIABLE, compensation=_noop),),
            "a retriable step is never compensated",
        ),
        (
            (
                Step(
                    "a", _noop, compensation=_noop, retry=RetryPolicy(max_attempts=None)
                ),
            ),
            "only retriable steps may retry forever",
        ),
        (
            (Step("a", _noop, compensation=_noop, timeout=0),),
            "timeout must be positive",
        ),
        ((Step("Bad-Name", _noop, compensation=_noop),), "name must be snake_case"),
        ((), "at least one step"),
    ],
)
def test_invalid_definition_fails_at_registration(
    steps: tuple[Step, ...], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        register(SagaDefinition(name="broken_saga", steps=steps))
    with pytest.raises(DefinitionError):
        get("broken_saga")


def test_registering_two_definitions_under_one_name_fails() -> None:
    first = SagaDefinition(name="twice", steps=(Step("a", _noop, compensation=_noop),))
    second = SagaDefinition(name="twice", steps=(Step("b", _noop, compensation=_noop),))
    register(first)
    try:
        with pytest.raises(DefinitionError, match="registered twice"):
            register(second)
    finally:
        unregister("twice")


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, backoff=1.0, multiplier=2.0, max_backoff=5.0)
    for attempt, base in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (6, 5.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > 0  # jittered, not lockstep
    assert policy.allows(6)
    assert not policy.allows(7)
    assert RetryPolicy(max_attempts=None).allows(10_000)


def test_idempotency_keys_name_saga_step_and_kind() -> None:
    from uuid import UUID

    from sagas.definition import StepContext

    ctx = StepContext(
        saga_id=UUID(int=7),
        business_key="order:1",
        step="charge_payment",
        kind="compensation",
        attempt=2,
        data={},
    )
    assert ctx.idempotency_key == f"{UUID(int=7)}:charge_payment:compensation"
    assert ctx.action_key == f"{UUID(int=7)}:charge_payment:action"


def test_short_visibility_timeout_is_reported(settings: object) -> None:
    from sagas.checks import visibility_timeout_check

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 20}  # type: ignore[attr-defined]
    [warning] = visibility_timeout_check()
    assert warning.id == "sagas.W001"

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}  # type: ignore[attr-defined]
    assert visibility_timeout_check() == []


def test_index_of_still_answers_but_warns_that_it_is_deprecated() -> None:
    definition = SagaDefinition(
        name="indexed_saga",
        steps=(Step("reserve", _noop, compensation=_noop), Step("charge", _noop)),
    )

    with pytest.warns(DeprecationWarning, match="index_of") as warned:
        found = definition.index_of("charge")
    with pytest.warns(DeprecationWarning, match="index_of"):
        missing = definition.index_of("ship")

    assert (found, missing) == (1, None)
    # The warning names the caller's line, not the library's.
    assert [w.filename for w in warned] == [__file__]
