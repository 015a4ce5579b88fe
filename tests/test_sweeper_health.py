"""The sweeper needs no extra command, and its silence is noticed."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.db.models.functions import Now
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from prometheus_client import REGISTRY

from sagas import tasks
from sagas.checks import sweeper_heartbeat_check
from sagas.engine import saga_start
from sagas.models import Saga, StepAttempt, SweeperHeartbeat
from sagas.schedule import SWEEP_TASK_NAME, on_beat_init
from sagas.selectors import stuck_reason
from tests.admin_support import CHANGELIST, failed_saga, pending_saga

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _age_heartbeat(seconds: float) -> None:
    SweeperHeartbeat.objects.update(swept_at=F("swept_at") - timedelta(seconds=seconds))


def test_beat_start_installs_the_missing_sweep_schedule(settings: Any) -> None:
    # given no schedule row (install_sweepers never ran, or the row was deleted)
    settings.SAGAS_SWEEP_INTERVAL = 3
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).delete()

    # when beat starts
    on_beat_init()

    # then the sweep is scheduled at the configured interval
    task = PeriodicTask.objects.get(name=SWEEP_TASK_NAME)
    assert (task.task, task.enabled) == ("sagas.sweep", True)
    assert (task.interval.every, task.interval.period) == (3, IntervalSchedule.SECONDS)


def test_beat_restart_keeps_a_schedule_edited_in_the_admin() -> None:
    # given an operator changed the interval and the expiry
    on_beat_init()
    edited, _ = IntervalSchedule.objects.get_or_create(
        every=17, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).update(
        interval=edited, expire_seconds=99
    )

    # when beat restarts
    on_beat_init()

    # then their edit stands
    task = PeriodicTask.objects.get(name=SWEEP_TASK_NAME)
    assert (task.interval.every, task.expire_seconds) == (17, 99)


def test_install_sweepers_still_installs_and_updates_the_interval() -> None:
    # given / when
    call_command("install_sweepers", verbosity=0)
    call_command("install_sweepers", every=4, verbosity=0)

    # then
    assert PeriodicTask.objects.get(name=SWEEP_TASK_NAME).interval.every == 4


def test_each_sweep_stamps_the_heartbeat_with_the_database_clock() -> None:
    # given no sweep yet
    assert not SweeperHeartbeat.objects.exists()

    # when the sweep task runs twice (called directly, as beat's message would)
    tasks.sweep_task()
    tasks.sweep_task()

    # then
    beat = SweeperHeartbeat.objects.get()
    assert beat.passes == 2
    assert abs((timezone.now() - beat.swept_at).total_seconds()) < 60


def test_one_sweep_task_drains_batch_after_batch_and_records_them_once() -> None:
    # given five sagas whose dispatch lease has lapsed, and a batch of two
    sagas = [pending_saga(f"trip:{n}") for n in range(5)]
    Saga.objects.update(wake_at=Now())
    StepAttempt.objects.update(not_before=Now())
    before = _sweep_samples()

    # when one sweep task runs (as beat's message would)
    handled = tasks.sweep_task(batch=2)

    # then every saga was re-sent in three batches, timed and stamped once
    assert handled == 5
    assert set(
        StepAttempt.objects.filter(saga__in=sagas).values_list("dispatches", flat=True)
    ) == {2}
    beat = SweeperHeartbeat.objects.get()
    assert (beat.handled, beat.passes) == (5, 1)
    after = _sweep_samples()
    assert after["count"] == before["count"] + 1
    assert after["last_run"] >= before["last_run"]


def _sweep_samples() -> dict[str, float]:
    return {
        "count": REGISTRY.get_sample_value("sagas_sweeper_pass_duration_seconds_count")
        or 0.0,
        "last_run": REGISTRY.get_sample_value(
            "sagas_sweeper_last_run_timestamp_seconds"
        )
        or 0.0,
    }


def test_check_warns_while_sagas_are_active_and_no_sweep_ever_ran() -> None:
    # given a saga in progress and no sweeper
    pending_saga("trip:1")

    # when
    messages = sweeper_heartbeat_check()
    output = StringIO()
    call_command("check", stderr=output, stdout=output)

    # then
    assert [m.id for m in messages] == ["sagas.W002"]
    assert "no saga sweep has ever run" in messages[0].msg
    assert "sagas.W002" in output.getvalue()


def test_check_warns_when_the_last_sweep_is_older_than_a_few_intervals(
    settings: Any,
) -> None:
    # given a sweeper that ran, then stopped 2 minutes ago (interval 2 s)
    settings.SAGAS_SWEEP_INTERVAL = 2
    pending_saga("trip:1")
    tasks.sweep_task()
    assert sweeper_heartbeat_check() == []

    # when
    _age_heartbeat(120)

    # then
    [message] = sweeper_heartbeat_check()
    assert "no saga sweep has run for 2 min" in message.msg


def test_check_is_quiet_without_active_sagas() -> None:
    # given no sweeper, but nothing that needs one
    failed_saga("trip:parked")

    # when / then
    assert sweeper_heartbeat_check() == []


def test_admin_shows_a_banner_while_the_sweeper_is_silent(admin_client: Client) -> None:
    # given a saga in progress and no sweep
    pending_saga("trip:1")

    # when / then: the banner shows, and goes once a sweep has run
    assert "data-sweeper-alert" in admin_client.get(CHANGELIST).content.decode()
    tasks.sweep_task()
    assert "data-sweeper-alert" not in admin_client.get(CHANGELIST).content.decode()


def test_stuck_filter_says_why_each_saga_counts_as_stuck(admin_client: Client) -> None:
    # given a parked saga and one whose step nobody has run for an hour
    failed_saga("trip:parked")
    idle = saga_start("test_four_steps", business_key="trip:idle")
    Saga.objects.filter(pk=idle.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    pending_saga("trip:fresh")

    # when
    response = admin_client.get(CHANGELIST, {"stuck": "yes"})
    only_idle = admin_client.get(CHANGELIST, {"stuck": "idle"})

    # then
    html = response.content.decode()
    assert "Stuck because" in html
    assert "parked failed, an operator must act" in html
    assert "no progress for 60 min; step_one action #1 sent 1x" in html
    assert [s.business_key for s in only_idle.context["cl"].result_list] == [
        "trip:idle"
    ]
    fresh = Saga.objects.select_related("current_attempt").get(
        business_key="trip:fresh"
    )
    assert stuck_reason(fresh) == ""


def test_beat_health_allows_five_sweep_intervals_by_default(settings: Any) -> None:
    # given beat sent the sweep 40 s ago
    on_beat_init()
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).update(
        last_run_at=timezone.now() - timedelta(seconds=40)
    )

    # when / then: late at 2 s intervals (at least 30 s), on time at 10 s ones
    settings.SAGAS_SWEEP_INTERVAL = 2
    with pytest.raises(CommandError, match=r"over 30s"):
        call_command("sagas_health", "beat", stdout=StringIO())
    settings.SAGAS_SWEEP_INTERVAL = 10
    call_command("sagas_health", "beat", stdout=StringIO())
