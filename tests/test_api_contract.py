"""The API against its own served OpenAPI schema, as a client nobody here wrote.

schemathesis generates valid and invalid requests from ``/api/openapi.json``
and checks every answer: no 5xx, documented status codes, content types and
bodies, invalid data rejected, valid data accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from sagas.engine import saga_start
from tests.admin_support import TEST_SAGA, make_user
from tests.helpers import order_body

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Examples per operation; SAGAS_CONTRACT_EXAMPLES raises it for a longer run.
EXAMPLES = int(os.environ.get("SAGAS_CONTRACT_EXAMPLES", "40"))


def _session_key(user: User) -> str:
    client = Client()
    client.force_login(user)
    return str(client.cookies[django_settings.SESSION_COOKIE_NAME].value)


def _config(path: Path, *, saga_id: str, order_id: str, session: str) -> Path:
    """Write the shared config plus ids that exist, so 200s get checked too."""
    path.write_text(
        CONFIG.read_text()
        + f"""
[auth.openapi.SagaViewerAuth]
api_key = "{session}"

[dictionaries.sagas]
values = ["{saga_id}"]
[dictionaries.orders]
values = ["{order_id}"]
[dictionaries.skus]
values = ["WIDGET-1", "GADGET-1", "GIZMO-1"]

[parameters]
"path.saga_id" = {{ dictionary = "sagas", probability = 0.5 }}
"path.order_id" = {{ dictionary = "orders", probability = 0.5 }}
"body.items[*].sku" = {{ dictionary = "skus", probability = 0.8 }}
"""
    )
    return path


def _schemathesis(
    url: str, config: Path, report: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(config), "--no-color",
            "run", f"{url}/api/openapi.json",
            "--checks", ",".join(CHECKS),
            "--max-examples", str(EXAMPLES),
            "--seed", "20261125",
            "--workers", "1",
            "--request-timeout", "20",
            "--report", "junit", "--report-junit-path", str(report),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


@pytest.fixture
def _no_throttle(settings: Any) -> None:
    # Throttling has its own tests; here it would hide every other answer.
    settings.ORDERS_CHECKOUT_RATE = "100000/s"


@pytest.mark.usefixtures("_no_throttle")
def test_api_conforms_to_its_served_schema(
    live_server: Any, artifacts_dir: Path, tmp_path: Path
) -> None:
    # given: a catalogue, an order and a saga to find, a viewer's session
    call_command("seed_catalog", stock=100000, verbosity=0)
    order = (
        Client()
        .post("/api/orders/", json.dumps(order_body()), content_type="application/json")
        .json()
    )
    saga = saga_start(TEST_SAGA, business_key="contract")
    config = _config(
        tmp_path / "schemathesis.toml",
        saga_id=str(saga.pk),
        order_id=order["id"],
        session=_session_key(make_user("viewer", perms=["view_saga"])),
    )
    report = artifacts_dir / "schemathesis-junit.xml"

    # when
    result = _schemathesis(live_server.url, config, report)

    # then: every case ran and passed every check
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    suite = ElementTree.parse(report).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 5, output[-5000:]
    assert not suite.findall(".//failure")
    assert not suite.findall(".//error")
