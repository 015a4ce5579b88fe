"""Guarantees that must survive deploys, bugs in steps and mixed failures.

Each saga is driven through the real engine on PostgreSQL, in this process:
``step_execute`` as a worker runs it, ``sweep`` as beat runs it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.db.models.functions import Now

from sagas import engine, registry
from sagas.definition import SagaDefinition, Step
from sagas.engine import machine
from sagas.errors import OperatorActionRefused
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.states import AttemptKind, AttemptStatus, SagaStatus
from tests.engine_support import (
    CALLS,
    FAST,
    HOOKS,
    attempts,
    behave,
    calls,
    cleanup,
    define,
    expire,
    make_due,
    run_next,
    start,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def drive(saga_id: Any, limit: int = 60) -> Saga:
    for _ in range(limit):
        saga = Saga.objects.get(pk=saga_id)
        if saga.status not in ("pending", "running", "compensating"):
            return saga
        run_next(saga_id)
    raise AssertionError(f"saga {saga_id} did not stop")


# --- 1. a deploy that changes a definition -------------------------------------------


def test_in_flight_saga_finishes_on_the_version_it_started_with() -> None:
    # given: v1 = reserve, charge, ship with charge in flight
    v1 = define("c", "c", "c", names=("reserve", "charge", "ship"), name="deploy")
    saga = start(v1)
    run_next(saga.pk)
    # when: v2 (charge renamed, reserve removed) is deployed beside the retired v1
    registry.unregister("deploy", 1)
    registry.register(replace(v1, retired=True))
    v2 = define("c", "c", names=("charge_card", "ship"), name="deploy", version=2)
    final = drive(saga.pk)

    # then: the saga charged, on v1, and new sagas start on v2
    assert final.status == SagaStatus.COMPLETED
    assert final.version == 1
    assert calls(saga.pk) == ["reserve", "charge", "ship"]
    assert start("deploy").version == v2.version


def test_definition_replaced_in_place_parks_instead_of_running_another_step() -> None:
    # given: v1 with charge in flight
    define("c", "c", "c", names=("reserve", "charge", "ship"), name="inplace")
    saga = start("inplace")
    run_next(saga.pk)
    # when: v1 is replaced by a definition without reserve (same version)
    registry.unregister("inplace")
    define("c", "c", names=("charge_card", "ship"), name="inplace")
    outcome = run_next(saga.pk)

    # then: nothing ran in the charge's stead; the saga waits for an operator
    saga.refresh_from_db()
    assert outcome == "parked"
    assert saga.status == SagaStatus.FAILED
    assert "'charge'" in saga.last_error
    assert "without a new version" in saga.last_error
    assert calls(saga.pk) == ["reserve"]


def test_step_inserted_at_the_front_in_place_parks_without_integrity_error() -> None:
    define("c", "c", names=("charge", "ship"), name="front")
    saga = start("front")
    run_next(saga.pk)
    registry.unregister("front")
    define("c", "c", "c", names=("check", "charge", "ship"), name="front")

    outcome = run_next(saga.pk)

    saga.refresh_from_db()
    assert outcome == "parked"
    assert saga.status == SagaStatus.FAILED
    assert calls(saga.pk) == ["charge"]


def test_renamed_step_keeps_its_idempotency_key_for_running_sagas() -> None:
    # given: charge fails transiently (its effect may have happened), then
    # v2 renames it while v1 stays in code
    v1 = define("c", "c", names=("charge", "ship"), name="rename")
    saga = start(
        v1, plan={"charge:action": ["transient", "ok"], "ship:action": ["permanent"]}
    )
    run_next(saga.pk)
    registry.unregister("rename", 1)
    registry.register(replace(v1, retired=True))
    define("c", "c", names=("charge_card", "ship"), name="rename", version=2)

    # when
    final = drive(saga.pk)

    # then: both charge calls used one key, and the refund undid that key
    keys = {
        key
        for sid, step, kind, key in CALLS
        if sid == str(saga.pk) and step == "charge"
    }
    assert keys == {f"{saga.pk}:charge:action", f"{saga.pk}:charge:compensation"}
    assert final.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["charge"]


# --- 2. a definition removed or shortened --------------------------------------------


def test_sweeper_parks_sagas_whose_definition_was_removed_so_others_move() -> None:
    # given: three sagas of a removed definition and one healthy saga, all due
    define("c", "c", name="removed")
    orphans = [start("removed") for _ in range(3)]
    healthy = start(define("c", name="healthy"))
    registry.unregister("removed")
    for saga in [*orphans, healthy]:
        make_due(saga.pk)
    Saga.objects.filter(pk__in=[s.pk for s in orphans]).update(
        wake_at=Now() - datetime.timedelta(minutes=1)
    )

    # when: two sweeps of a batch of three
    engine.sweep(batch=3)
    engine.sweep(batch=3)

    # then: the orphans are parked with a clear error; the healthy one was re-sent
    for orphan in orphans:
        orphan.refresh_from_db()
        assert orphan.status == SagaStatus.FAILED
        assert orphan.wake_at is None
        assert "'removed' version 1 is not in this code base" in orphan.last_error
    assert SagaEvent.objects.filter(saga=healthy, actor="sweeper").exists()


def test_operator_verbs_on_a_saga_of_a_shortened_definition_refuse_or_resolve() -> None:
    define("c", "c", "c", name="shortened")
    saga = start("shortened")
    run_next(saga.pk)
    run_next(saga.pk)
    registry.unregister("shortened")
    define("c", name="shortened")

    assert run_next(saga.pk) == "parked"
    with pytest.raises(OperatorActionRefused, match="not in"):
        engine.saga_retry(saga.pk, actor="ann", reason="try")
    engine.saga_resolve(saga.pk, actor="ann", reason="refunded by hand")
    saga.refresh_from_db()
    assert saga.status == SagaStatus.RESOLVED


# --- 3. errors after the action returns ----------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "error_type", "message"),
    [
        ("datetime", "sagas.errors.StepResultError", "not JSON"),
        ("decimal", "sagas.errors.StepResultError", "not JSON"),
        ("uuid", "sagas.errors.StepResultError", "not JSON"),
        ("nan", "sagas.errors.StepResultError", "not JSON"),
        ("list", "sagas.errors.StepResultError", "mapping or None, not list"),
        ("nul", "sagas.errors.StepResultError", "NUL"),
        ("base", "tests.engine_support.Interrupt", "interrupted"),
        ("nul_error", "builtins.RuntimeError", "bad\\x00byte"),
    ],
)
def test_a_failure_after_or_outside_the_action_is_recorded_with_its_real_error(
    outcome: str, error_type: str, message: str
) -> None:
    definition = define("c", "c")
    saga = start(definition, plan={"step_2:action": [outcome]})
    run_next(saga.pk)

    run_next(saga.pk)

    failed = StepAttempt.objects.get(saga=saga, step="step_2", kind="action")
    assert failed.status == AttemptStatus.FAILED
    assert failed.error_type == error_type
    assert message in failed.error
    saga.refresh_from_db()
    assert saga.current_attempt_id != failed.pk


def test_result_errors_compensate_the_step_itself_its_effects_happened() -> None:
    saga = start(define("c", "c"), plan={"step_2:action": ["datetime"]})

    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["step_2", "step_1"]


def test_an_error_type_name_over_200_characters_is_recorded_cut() -> None:
    saga = start(define("c"), plan={"step_1:action": ["long_type"]})

    drive(saga.pk)

    failed = StepAttempt.objects.get(saga=saga, kind="action")
    assert failed.status == AttemptStatus.FAILED
    assert failed.error_type.startswith("tests.engine_support.EEEE")
    assert len(failed.error_type) == 200


def test_an_actor_over_150_characters_is_recorded_cut() -> None:
    saga = start(define("c"), plan={"step_1:action": ["permanent"]})
    drive(saga.pk)
    saga = start(define("c", "r"), plan={"step_2:action": ["runtime"]})
    drive(saga.pk)

    engine.saga_resolve(saga.pk, actor="x" * 300, reason="done")

    event = SagaEvent.objects.filter(saga=saga).latest("id")
    assert event.new_status == SagaStatus.RESOLVED
    assert len(event.actor) == 150


@pytest.mark.parametrize("hook_name", ["on_completed", "on_compensated", "on_failed"])
def test_a_hook_that_raises_is_recorded_never_left_dispatched(hook_name: str) -> None:
    # given: a saga ending in the state whose hook raises
    kinds, plan = {
        "on_completed": (("c", "r"), {}),
        "on_compensated": (("c", "c"), {"step_2:action": ["permanent"]}),
        "on_failed": (("c", "r"), {"step_2:action": ["runtime"]}),
    }[hook_name]
    saga = start(define(*kinds), plan=plan, raise_in=[hook_name])

    # when
    final = drive(saga.pk)

    # then: the saga stopped, no attempt is left dispatched, the error is kept
    assert final.status in (SagaStatus.FAILED, SagaStatus.COMPENSATED)
    assert not StepAttempt.objects.filter(saga=saga, status="dispatched").exists()
    assert f"{hook_name} hook broke" in (
        final.last_error
        + " ".join(
            StepAttempt.objects.filter(saga=saga).values_list("error", flat=True)
        )
    )
    assert final.status == SagaStatus.FAILED


def test_a_retriable_step_with_a_bug_parks_after_a_bounded_number_of_attempts(
    settings: Any,
) -> None:
    settings.SAGAS_RETRIABLE_MAX_ERRORS = 3
    saga = start(define("c", "r"), plan={"step_2:action": ["runtime"]})

    final = drive(saga.pk)

    assert final.status == SagaStatus.FAILED
    tries = StepAttempt.objects.filter(saga=saga, step="step_2")
    assert [a.error_type for a in tries] == ["builtins.RuntimeError"] * 3
    assert "has a bug" in final.last_error


# --- 4. transient, then permanent ----------------------------------------------------


def test_transient_then_permanent_compensates_the_step_itself() -> None:
    saga = start(
        define("c", "c", "c"), plan={"step_2:action": ["transient", "permanent"]}
    )

    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["step_2", "step_1"]


# --- 5. a pivot whose outcome is unknown ---------------------------------------------


def test_a_pivot_that_exhausted_transient_retries_is_parked() -> None:
    saga = start(define("c", "p", "r"), plan={"step_2:action": ["transient"]})

    final = drive(saga.pk)

    assert final.status == SagaStatus.FAILED
    assert "outcome is unknown" in final.last_error
    assert calls(saga.pk, "compensation") == []


def test_a_pivot_that_timed_out_for_good_is_parked() -> None:
    saga = start(define("c", "p"), plan={})
    run_next(saga.pk)
    for _ in range(FAST.max_attempts or 0):
        expire(saga.pk)
        engine.sweep()
        saga.refresh_from_db()
        if saga.status == SagaStatus.FAILED:
            break
        make_due(saga.pk)
        engine.sweep()

    saga.refresh_from_db()
    assert saga.status == SagaStatus.FAILED
    assert calls(saga.pk, "compensation") == []


def test_a_pivot_that_failed_cleanly_compensates_the_steps_before_it() -> None:
    saga = start(define("c", "p"), plan={"step_2:action": ["permanent"]})

    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["step_1"]


# --- 6. compensations retry every error ----------------------------------------------


def test_a_compensation_raising_a_bug_is_retried_then_succeeds() -> None:
    saga = start(
        define("c", "c"),
        plan={"step_2:action": ["permanent"], "step_1:compensation": ["runtime", "ok"]},
    )

    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    tries = StepAttempt.objects.filter(saga=saga, kind="compensation")
    assert [a.status for a in tries] == ["failed", "succeeded"]


def test_a_compensation_that_keeps_failing_parks_after_the_attempt_limit(
    settings: Any,
) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 4
    settings.SAGAS_COMPENSATION_BACKOFF = 0.01
    saga = start(
        define("c", "c"),
        plan={"step_2:action": ["permanent"], "step_1:compensation": ["runtime"]},
    )

    final = drive(saga.pk)

    assert final.status == SagaStatus.FAILED
    assert StepAttempt.objects.filter(saga=saga, kind="compensation").count() == 4


# --- 9. operator retry ---------------------------------------------------------------


def test_operator_retry_of_a_compensation_gets_a_fresh_attempt_budget(
    settings: Any,
) -> None:
    # given: a compensation parked after its attempts ran out
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 2
    settings.SAGAS_COMPENSATION_BACKOFF = 0.01
    saga = start(
        define("c", "c"),
        plan={
            "step_2:action": ["permanent"],
            "step_1:compensation": ["transient", "transient", "transient", "ok"],
        },
    )
    assert drive(saga.pk).status == SagaStatus.FAILED

    # when: retried, and the next attempt fails transiently once more
    engine.saga_retry(saga.pk, actor="ann", reason="gateway is back")
    final = drive(saga.pk)

    # then: that failure was retried with backoff, not parked
    assert final.status == SagaStatus.COMPENSATED
    tries = list(StepAttempt.objects.filter(saga=saga, kind="compensation"))
    assert [a.try_number for a in tries] == [1, 2, 1, 2]


def test_operator_retry_clears_the_old_failure_of_a_saga_that_then_completes(
    settings: Any,
) -> None:
    settings.SAGAS_RETRIABLE_MAX_ERRORS = 1
    saga = start(define("c", "r"), plan={"step_2:action": ["runtime", "ok"]})
    parked = drive(saga.pk)
    assert parked.status == SagaStatus.FAILED
    assert parked.failed_step == "step_2"

    engine.saga_retry(saga.pk, actor="ann", reason="fixed")
    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPLETED
    assert (final.failed_step, final.error, final.last_error) == ("", "", "")


# --- 11. results and the context -----------------------------------------------------


def test_a_result_cannot_overwrite_a_context_key() -> None:
    saga = start(define("c", "c"), owner="me", plan={"step_2:action": ["clobber"]})

    final = drive(saga.pk)

    assert final.context["owner"] == "me"
    failed = StepAttempt.objects.get(saga=saga, step="step_2", kind="action")
    assert failed.error_type == "sagas.errors.StepResultError"
    assert "owner" in failed.error


def test_compensation_results_are_not_merged_into_the_context() -> None:
    saga = start(define("c", "c"), plan={"step_2:action": ["permanent"]})

    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    assert "ignored" not in final.context
    undo = StepAttempt.objects.get(saga=saga, kind="compensation")
    assert undo.result == {"ignored": 1}


# --- operator verbs that complete the set --------------------------------------------


def test_skipping_a_failed_compensation_goes_on_with_the_previous_step(
    settings: Any,
) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1
    saga = start(
        define("c", "c", "c"),
        plan={"step_3:action": ["permanent"], "step_2:compensation": ["runtime"]},
    )
    assert drive(saga.pk).status == SagaStatus.FAILED

    with pytest.raises(OperatorActionRefused, match="reason"):
        engine.saga_skip_compensation(saga.pk, actor="ann", reason=" ")
    engine.saga_skip_compensation(saga.pk, actor="ann", reason="refunded by hand")
    final = drive(saga.pk)

    assert final.status == SagaStatus.COMPENSATED
    assert calls(saga.pk, "compensation") == ["step_2", "step_1"]
    skipped = StepAttempt.objects.get(saga=saga, status=AttemptStatus.SKIPPED)
    assert (skipped.step, skipped.error) == ("step_2", "refunded by hand")
    assert SagaEvent.objects.filter(
        saga=saga, actor="operator:ann", detail__contains="refunded by hand"
    ).exists()


def test_resolving_runs_the_on_resolved_hook() -> None:
    saga = start(define("c", "r"), plan={"step_2:action": ["runtime"]})
    drive(saga.pk)

    engine.saga_resolve(saga.pk, actor="ann", reason="sent by hand")

    assert (str(saga.pk), "on_resolved") in HOOKS
    assert (str(saga.pk), "on_failed") in HOOKS


def test_migrating_a_parked_saga_to_a_version_that_maps_by_name() -> None:
    # given: a saga parked because its v1 was replaced in place
    define("c", "c", names=("reserve", "charge"), name="moving")
    saga = start("moving")
    run_next(saga.pk)
    registry.unregister("moving")
    define("c", "c", "c", names=("reserve", "charge", "ship"), name="moving", version=2)
    assert run_next(saga.pk) == "parked"

    # when
    with pytest.raises(OperatorActionRefused, match="no saga definition"):
        engine.saga_migrate(saga.pk, version=3, actor="ann", reason="x")
    engine.saga_migrate(saga.pk, version=2, actor="ann", reason="v1 is gone")
    engine.saga_retry(saga.pk, actor="ann", reason="run on v2")
    final = drive(saga.pk)

    # then
    assert final.version == 2
    assert final.status == SagaStatus.COMPLETED
    assert calls(saga.pk) == ["reserve", "charge", "ship"]
    assert SagaEvent.objects.filter(
        saga=saga, detail__startswith="migrated from version 1 to 2"
    ).exists()


def test_migration_is_refused_when_a_step_that_ran_has_no_counterpart() -> None:
    define("c", "c", names=("reserve", "charge"), name="nomap")
    saga = start("nomap")
    run_next(saga.pk)
    define("c", names=("charge",), name="nomap", version=2)

    with pytest.raises(OperatorActionRefused, match="has no step reserve"):
        engine.saga_migrate(saga.pk, version=2, actor="ann", reason="x")


def test_migration_is_refused_when_the_target_adds_a_step_before_the_current_one() -> (
    None
):
    define("c", "c", names=("reserve", "charge"), name="insert")
    saga = start("insert")
    run_next(saga.pk)
    define(
        "c", "c", "c", names=("check", "reserve", "charge"), name="insert", version=2
    )

    with pytest.raises(OperatorActionRefused, match="adds check"):
        engine.saga_migrate(saga.pk, version=2, actor="ann", reason="x")


# --- the registry --------------------------------------------------------------------


def test_new_sagas_start_on_the_newest_version_that_is_not_retired() -> None:
    define("c", name="versions", version=1)
    define("c", name="versions", version=2)
    define("c", name="versions", version=3, retired=True)

    assert registry.get("versions").version == 2
    assert start("versions").version == 2
    with pytest.raises(Exception, match="retired"):
        start(registry.get("versions", 3))


def test_the_same_version_cannot_be_registered_twice_with_other_steps() -> None:
    define("c", name="twice")
    with pytest.raises(Exception, match="registered twice"):
        registry.register(
            SagaDefinition(
                name="twice",
                steps=(Step("other", behave, compensation=behave, retry=FAST),),
            )
        )


def test_only_the_state_machine_changes_statuses_through_transitions() -> None:
    saga = start(define("c"))
    tx = machine.Transition(saga, "engine")
    with pytest.raises(ValueError, match="saga_status"):
        tx.set(status=SagaStatus.COMPLETED)
    attempt = attempts(saga.pk)[0]
    assert attempt.kind == AttemptKind.ACTION


def test_a_deploy_mid_flight_lets_every_v1_saga_finish_on_v1() -> None:
    # given: v1 sagas at every position, including some compensating
    v1 = define("c", "c", "c", "c", names=("a", "b", "c", "d"), name="rollout")
    sagas = []
    for position in range(4):
        for plan in ({}, {"d:action": ["permanent"]}):
            saga = start(v1, plan=plan)
            for _ in range(position):
                run_next(saga.pk)
            sagas.append(saga)

    # when: v2 inserts x, renames b to b2 and removes c; v1 stays, retired
    registry.unregister("rollout", 1)
    registry.register(replace(v1, retired=True))
    v2 = define(
        "c", "c", "c", "c", names=("a", "x", "b2", "d"), name="rollout", version=2
    )
    finals = [drive(saga.pk) for saga in sagas]
    newcomer = start("rollout")
    drive(newcomer.pk)

    # then: every v1 saga ran v1's steps; the new one ran v2's
    for saga, final in zip(sagas, finals, strict=True):
        assert final.version == 1
        if final.status == SagaStatus.COMPLETED:
            assert calls(saga.pk) == ["a", "b", "c", "d"]
        else:
            assert final.status == SagaStatus.COMPENSATED
            assert calls(saga.pk, "compensation") == ["c", "b", "a"]
    assert {f.status for f in finals} == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    assert newcomer.version == v2.version
    assert calls(newcomer.pk) == ["a", "x", "b2", "d"]
