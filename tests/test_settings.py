"""Safe by default: DEBUG off, a secret required, HTTPS settings for production."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = ROOT / "deploy" / "production.env"


def _clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without any Django or test setting, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SAGAS_", "DATABASE_", "CELERY_", "CACHE_"))
    }
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings", **extra}


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _documented_production_env(tmp_path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in PRODUCTION_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    # Fill the placeholders the way an operator would.
    values["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    values["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    values["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    values["CACHE_URL"] = "redis://127.0.0.1:6379/1"
    values["SAGAS_VAR_DIR"] = str(tmp_path)
    assert not [v for v in values.values() if "<" in v], values
    return values


def test_check_deploy_with_the_documented_production_env_has_no_warnings(
    tmp_path: Path,
) -> None:
    # given
    env = _clean_env(**_documented_production_env(tmp_path))

    # when
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")

    # then
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_start_without_secret_key_outside_debug_is_refused(tmp_path: Path) -> None:
    result = _manage(_clean_env(SAGAS_VAR_DIR=str(tmp_path)), "check")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr


def test_debug_is_off_unless_asked(tmp_path: Path) -> None:
    # given: only a secret key
    env = _clean_env(DJANGO_SECRET_KEY="k" * 60, SAGAS_VAR_DIR=str(tmp_path))
    show = [
        "shell",
        "-v0",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
    ]

    # when
    default = _manage(env, *show)
    asked = _manage({**env, "DJANGO_DEBUG": "true"}, *show)

    # then
    assert default.stdout.strip() == "False", default.stderr
    assert asked.stdout.strip() == "True", asked.stderr


def test_debug_without_secret_key_starts_for_development(tmp_path: Path) -> None:
    env = _clean_env(DJANGO_DEBUG="true", SAGAS_VAR_DIR=str(tmp_path))

    assert _manage(env, "check").returncode == 0
