"""Every API error is JSON: bad inputs of every shape, unknown paths, no database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from orders.models import Order
from sagas.models import Saga
from tests.helpers import order_body

ROOT = Path(__file__).resolve().parent.parent


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _with(**changes: Any) -> str:
    body = order_body()
    body.update(changes)
    return json.dumps(body)


def _item(**changes: Any) -> str:
    body = order_body()
    body["items"][0].update(changes)
    return json.dumps(body)


# name -> raw request body, every one a client mistake or an attack
BAD_BODIES: dict[str, str | bytes] = {
    "oversized 5 MB": json.dumps({**order_body(), "pad": "x" * 5_000_000}),
    "oversized just past the limit": _with(
        customer_id="c" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    ),
    "deeply nested array": _nested(100_000)[: settings.DATA_UPLOAD_MAX_MEMORY_SIZE],
    "deeply nested, within the size limit": _nested(30_000),
    "deeply nested object": '{"a":' * 20_000 + "1" + "}" * 20_000,
    "nested in a field": _with(shipping_address=json.loads(_nested(500))),
    "malformed json": '{"customer_id": "c",',
    "not utf-8": b"\xff\xfe\x00{",
    "nul bytes": '{"customer_id": "c\\u0000"}',
    "lone surrogate": _with(customer_id="\ud800"),
    "empty": "",
    "top-level array": "[]",
    "top-level number": "1e999999",
    "nan": '{"customer_id": NaN}',
    "items a string": _with(items="WIDGET-1"),
    "items an object": _with(items={"sku": "WIDGET-1"}),
    "quantity a string": _item(quantity="1"),
    "quantity a bool": _item(quantity=True),
    "quantity huge": _item(quantity=10**400),
    "quantity fractional": _item(quantity=1.5),
    "quantity null": _item(quantity=None),
    "sku a number": _item(sku=1),
    "address a list": _with(shipping_address=["DE"]),
    "customer id an object": _with(customer_id={"$gt": ""}),
    "customer id an address list": _with(customer_id="x,victim@evil.example"),
    "too many items": _with(items=[{"sku": "WIDGET-1", "quantity": 1}] * 51),
    "unknown field": _with(is_admin=True),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_input_is_a_json_4xx_and_creates_nothing(name: str) -> None:
    # given
    call_command("seed_catalog", stock=10, verbosity=0)
    body = BAD_BODIES[name]

    # when
    response = Client().post("/api/orders/", body, content_type="application/json")

    # then
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json()["detail"]
    assert not Order.objects.exists()
    assert not Saga.objects.exists()


@pytest.mark.django_db
def test_oversized_body_is_413() -> None:
    response = Client().post(
        "/api/orders/", BAD_BODIES["oversized 5 MB"], content_type="application/json"
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large"


@pytest.mark.django_db
def test_largest_valid_checkout_fits_the_upload_limit() -> None:
    # given: every field at its longest, every character \\u-escaped
    call_command("seed_catalog", stock=100000, verbosity=0)
    text = "é"
    body = {
        "customer_id": "c" * 64,
        "items": [{"sku": "WIDGET-1", "quantity": 1000}] * 50,
        "payment_token": "t" * 100,
        "shipping_address": {
            "name": text * 200,
            "line1": text * 200,
            "city": text * 100,
            "postal_code": text * 20,
            "country": "DE",
        },
    }
    raw = json.dumps(body, ensure_ascii=True, indent=8)

    # when
    response = Client().post("/api/orders/", raw, content_type="application/json")

    # then
    assert len(raw.encode()) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert response.status_code == 202, response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/orders/42/",
        "/api/orders/not-a-uuid/",
        "/api/orders/00000000-0000-0000-0000-000000000000/",
        "/api/sagas/42/",
        "/api/sagas/42/attempts/",
        "/api/nothing-here/",
    ],
)
def test_unknown_ids_and_paths_are_json_404(path: str) -> None:
    response = Client().get(path)

    assert response.status_code in (401, 404)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json()["detail"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client()
answers = []
for method, path, body in [
    ("post", "/api/orders/", BODY),
    ("get", "/api/orders/00000000-0000-0000-0000-000000000000/", None),
    ("get", "/healthz/", None),
]:
    if body is None:
        response = client.get(path)
    else:
        response = client.post(path, body, content_type="application/json")
    answers.append([path, response.status_code, response["Content-Type"],
                    response.get("Retry-After"), response.content.decode()])
print(json.dumps(answers))
"""


def test_database_down_is_a_json_503_with_retry_after(tmp_path: Path) -> None:
    # given: the project's settings aimed at a port where no database listens
    url = f"postgres://sagas:sagas@127.0.0.1:{_closed_port()}/sagas"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "SANDBOX_DATABASE_URL": url,
        "SAGAS_VAR_DIR": str(tmp_path),
    }
    probe = _PROBE.replace("BODY", repr(json.dumps(order_body())))

    # when
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for path, status, content_type, retry_after, content in answers:
        assert status == 503, (path, status, content)
        assert content_type.startswith("application/json"), (path, content_type)
        assert retry_after is not None, path
        assert int(retry_after) > 0, path
        assert "unavailable" in json.loads(content)["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_error_is_a_json_500_without_traceback(
    debug: bool, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a fault injected into the order lookup
    settings.DEBUG = debug

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("internal detail: /srv/app/secret.py line 3")

    monkeypatch.setattr("orders.api.order_get", broken)

    # when
    response = Client(raise_request_exception=False).get(
        "/api/orders/00000000-0000-0000-0000-000000000000/"
    )

    # then
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json()["detail"] == "internal error"
    assert b"secret.py" not in response.content
    assert b"Traceback" not in response.content
