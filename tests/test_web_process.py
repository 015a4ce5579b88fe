"""The web process as docker-compose runs it: gunicorn, DEBUG off, real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
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
    ready_marker = "Booting worker"


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
    env = {
        **process_env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECRET_KEY": "test-" + "k" * 50,
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        env=env,
        check=True,
    )
    port = _free_port()
    web = Gunicorn(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "config.wsgi:application",
         "-b", f"127.0.0.1:{port}", "-w", "2"],
        env,
        log_dir,
    ).start()  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        # when
        status, body = _request(f"{base}/api/orders/", order_body())
        invalid_status, invalid = _request(f"{base}/api/orders/", {"items": []})
        css_status, _ = _request(f"{base}/static/admin/css/base.css")
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
    assert schema_status == 200
    assert json.loads(tracked)["status"] == "confirmed"
