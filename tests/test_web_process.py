"""The web process as docker-compose runs it: gunicorn, DEBUG off, real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sagas.testing import wait_for_sagas
from tests.helpers import order_body
from tests.processes import Process

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


class Gunicorn(Process):
    """gunicorn as shipped: the settings file config/gunicorn.py."""

    ready_marker = "Booting worker"

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(
            name,
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py",
             "config.wsgi:application"],
            env,
            log_dir,
        )  # fmt: skip


def _production_env(process_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **process_env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECRET_KEY": "test-" + "k" * 50,
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_gunicorn_with_debug_off_serves_api_and_admin_assets(
    worker: Any,
    catalogue: None,
    process_env: dict[str, str],
    log_dir: Path,
    tmp_path: Path,
) -> None:
    # given: production settings, collected static files, gunicorn on a free port
    env = _production_env(process_env, tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        env=env,
        check=True,
    )
    port = _free_port()
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    web = Gunicorn("gunicorn", env, log_dir).start()
    base = f"http://127.0.0.1:{port}"
    try:
        # when
        status, body = _request(f"{base}/api/orders/", order_body())
        invalid_status, invalid = _request(f"{base}/api/orders/", {"items": []})
        css_status, _ = _request(f"{base}/static/admin/css/base.css")
        sagas_css_status, sagas_css = _request(f"{base}/static/sagas/admin/sagas.css")
        schema_status, _ = _request(f"{base}/api/openapi.json")
        order = json.loads(body)
        wait_for_sagas([order["saga_id"]], timeout=30)
        _, tracked = _request(f"{base}/api/orders/{order['id']}/")
    finally:
        web.stop()

    # then
    assert status == 202
    assert invalid_status == 400
    assert "customer_id" in {e["field"] for e in json.loads(invalid)["errors"]}
    assert css_status == 200
    assert sagas_css_status == 200
    assert b".saga-badge" in sagas_css
    assert schema_status == 200
    assert json.loads(tracked)["status"] == "confirmed"


def _stall(port: int) -> socket.socket:
    """Open a checkout whose body never finishes arriving."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /api/orders/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"customer_id": "slow'
    )
    return sock


def test_a_stalled_client_does_not_delay_other_requests(
    process_env: dict[str, str], log_dir: Path, tmp_path: Path, transactional_db: Any
) -> None:
    # given: gunicorn as shipped, at its smallest (one worker process), and a
    # client stalled in the middle of its request body
    port = _free_port()
    env = {
        **_production_env(process_env, tmp_path),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
    }
    web = Gunicorn("gunicorn-stalled", env, log_dir).start()
    base = f"http://127.0.0.1:{port}"
    try:
        _request(f"{base}/healthz/")  # warm up
        stalled = _stall(port)
        time.sleep(0.5)  # the stalled request now holds a thread

        # when: other clients ask meanwhile
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            status, _ = _request(
                f"{base}/api/orders/00000000-0000-0000-0000-000000000000/"
            )
            latencies.append(time.monotonic() - started)
            assert status == 404
        stalled.close()
    finally:
        web.stop()

    # then
    print(f"latency beside a stalled client: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0, latencies
