"""The shipped docker-compose.yml: a migration job first, one image, no reseeding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "beat")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_migrations_run_once_in_a_job_the_app_services_wait_for(
    services: dict[str, Any],
) -> None:
    migrate = services["migrate"]

    assert "manage.py migrate" in migrate["command"]
    assert migrate["restart"] == "no"
    for name in APP_SERVICES:
        service = services[name]
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert "migrate" not in str(service.get("command", "")), name


def test_catalogue_seeding_runs_only_in_the_demo_profile(
    services: dict[str, Any],
) -> None:
    seeders = [
        name for name, s in services.items() if "seed_catalog" in str(s.get("command"))
    ]

    assert seeders == ["seed"]
    assert services["seed"]["profiles"] == ["demo"]


def test_one_image_is_built_once_and_run_by_every_app_service(
    services: dict[str, Any],
) -> None:
    built = [name for name, s in services.items() if "build" in s]

    assert built == ["migrate"]
    image = services["migrate"]["image"]
    for name in (*APP_SERVICES, "seed"):
        assert services[name]["image"] == image, name
        assert services[name]["pull_policy"] == "never", name


def test_long_running_services_restart_and_report_health(
    services: dict[str, Any],
) -> None:
    for name in ("postgres", "redis", *APP_SERVICES):
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz/" in " ".join(services["web"]["healthcheck"]["test"])


def test_no_known_secret_or_open_hosts(services: dict[str, Any]) -> None:
    env = services["web"]["environment"]

    assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    assert env["DJANGO_ALLOWED_HOSTS"] != "*"
    assert env["DJANGO_DEBUG"] == "false"
