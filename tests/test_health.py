"""Health checks against real processes: gunicorn's /healthz and /readyz with the
broker or database going away, a worker's ping, beat's and the sweeper's age."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tests.observability import Gunicorn, free_port, request
from tests.services import RedisServer

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def test_readyz_turns_503_naming_the_broker_when_it_stops(
    process_env: dict[str, str], log_dir: Path, redis_server: RedisServer
) -> None:
    # given: a web process whose broker is a Redis server of this session's own
    env = {**process_env, "CELERY_BROKER_URL": redis_server.url}
    web = Gunicorn("health-web", env, log_dir, free_port()).start()
    try:
        live_up = request(f"{web.base}/healthz")
        ready_up = request(f"{web.base}/readyz")
        # when: the broker stops
        with redis_server.stopped():
            live_down = request(f"{web.base}/healthz")
            ready_down = request(f"{web.base}/readyz")
    finally:
        web.stop()

    # then
    assert live_up == (200, {"status": "ok"})
    assert ready_up == (
        200,
        {"status": "ok", "checks": {"database": "ok", "broker": "ok"}},
    )
    assert live_down == (200, {"status": "ok"})
    status, body = ready_down
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "Connection refused" in body["checks"]["broker"], body


def test_readyz_turns_503_naming_the_database_when_it_is_unreachable(
    process_env: dict[str, str], log_dir: Path
) -> None:
    # given: a web process whose database port has nothing listening
    closed = free_port()
    url = f"postgres://sagas:sagas@127.0.0.1:{closed}/sagas"
    env = {**process_env, "DATABASE_URL": url, "SANDBOX_DATABASE_URL": url}
    web = Gunicorn("health-web-nodb", env, log_dir, free_port()).start()
    try:
        # when
        live = request(f"{web.base}/healthz")
        status, body = request(f"{web.base}/readyz")
    finally:
        web.stop()

    # then
    assert live == (200, {"status": "ok"})
    assert status == 503
    assert body["checks"]["broker"] == "ok"
    assert "Connection refused" in body["checks"]["database"], body


def _ping(node: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "inspect", "ping",
         "-d", node, "-t", "3"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_worker_health_check_pings_the_worker(
    start_worker: Any, process_env: dict[str, str]
) -> None:
    # given
    worker = start_worker("health-worker")
    node = f"health-worker@{socket.gethostname()}"

    # when / then: the compose health check's command answers while it runs
    alive = _ping(node, process_env)
    assert alive.returncode == 0, alive.stdout + alive.stderr
    assert "pong" in alive.stdout
    worker.stop()
    gone = _ping(node, process_env)
    assert gone.returncode != 0


def test_beat_and_sweeper_health_follow_the_sweeps(
    start_worker: Any, start_beat: Any, tmp_path: Path
) -> None:
    # given: a worker serving metrics, and beat sending a sweep every second
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    start_worker(
        "health-sweeper",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        SAGAS_WORKER_METRICS_PORT=str(port),
        SAGAS_WORKER_METRICS_ADDR="127.0.0.1",
    )
    beat = start_beat(every=1.0)
    url = f"http://127.0.0.1:{port}/metrics"

    def healthy(check: str, **options: Any) -> bool:
        try:
            call_command("sagas_health", check, max_age=4, stdout=None, **options)
        except CommandError:
            return False
        return True

    # when: sweeps run, both checks pass
    deadline = time.monotonic() + 20
    while not (healthy("beat") and healthy("sweeper", url=url)):
        assert time.monotonic() < deadline, "beat or sweeper never reported healthy"
        time.sleep(0.5)

    # then: once beat stops, both fail within a few seconds
    beat.stop()
    deadline = time.monotonic() + 20
    while healthy("beat") or healthy("sweeper", url=url):
        assert time.monotonic() < deadline, "still healthy with beat stopped"
        time.sleep(0.5)
    with pytest.raises(CommandError, match="last sweep"):
        call_command("sagas_health", "beat", max_age=4)
