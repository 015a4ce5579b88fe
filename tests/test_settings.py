"""Safe by default: DEBUG off, a secret required, HTTPS settings for production."""

from __future__ import annotations

import json
import os
import re
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


# --- engine settings: defaults in sagas/conf.py, overrides from the environment


# Variables of the project and of the worker process, not settings of the library.
_NOT_LIBRARY_SETTINGS = {
    "SAGAS_VAR_DIR",
    "SAGAS_BROKER_FOLDER",
    "SAGAS_WORKER_METRICS_PORT",
    "SAGAS_WORKER_METRICS_ADDR",
}


def _library_defaults() -> dict[str, object]:
    from sagas import conf
    from sagas.events import conf as events_conf

    return {**conf.DEFAULTS, **events_conf.DEFAULTS}


def _documented_defaults() -> dict[str, str]:
    """Return the README settings table's default per library setting."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Settings (environment)", 1)[1].split("\n\n", 2)[2]
    documented: dict[str, str] = {}
    for row in table.split("\n\n", 1)[0].splitlines()[2:]:
        variables, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`(SAGAS?_[A-Z_]+)`", variables)
        defaults = default.split(", ") if len(names) > 1 else [default]
        if names:
            documented.update(zip(names, defaults, strict=True))
    return {
        name: default
        for name, default in documented.items()
        if name not in _NOT_LIBRARY_SETTINGS
    }


def _as_documented(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}"
    if not value:
        return "empty"
    assert isinstance(value, list | tuple), value
    return ",".join(f"`{item}`" for item in value)


def test_every_documented_setting_has_its_default_in_the_library() -> None:
    documented = _documented_defaults()
    defaults = _library_defaults()

    assert sorted(documented) == sorted(defaults)
    shown = {
        name: _as_documented(value)
        for name, value in defaults.items()
        # Computed from the sweep interval when unset; the README says how.
        if value is not None
    }
    assert shown == {name: documented[name] for name in shown}
    assert documented["SAGAS_SWEEP_STALE_AFTER"] == "5 intervals, >= 30"


def test_the_project_reads_only_library_settings_from_the_environment() -> None:
    from config import settings as project

    assert set(project._from_environment) <= set(_library_defaults())


def test_engine_settings_are_the_defaults_unless_the_environment_sets_them(
    tmp_path: Path,
) -> None:
    # given the project's settings with no engine variable, then with some
    show = [
        "shell",
        "-v0",
        "-c",
        "import json; from sagas import conf; from sagas.events import conf as e; "
        "print(json.dumps({**{n: conf.value(n) for n in conf.DEFAULTS}, "
        "**{n: e.get(n) for n in e.DEFAULTS}}))",
    ]
    env = {
        key: value
        for key, value in _clean_env(
            DJANGO_SECRET_KEY="k" * 60, SAGAS_VAR_DIR=str(tmp_path)
        ).items()
        if not key.startswith("SAGA_EVENTS_")
    }
    overrides = {
        "SAGAS_DISPATCH_LEASE": "7.5",
        "SAGAS_SWEEP_BATCH": "20",
        "SAGAS_SWEEP_STALE_AFTER": "45",
        "SAGAS_PARTICIPANTS": "warehouse=s3cret",
        "SAGAS_DEFINITION_MODULES": "orders.sagas,orders.choreography",
        "SAGA_EVENTS_QUEUES": "celery,warehouse",
        "SAGA_EVENTS_TRACK": "false",
    }

    # when
    default = _manage(env, *show)
    overridden = _manage({**env, **overrides}, *show)

    # then
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout) == json.loads(json.dumps(_library_defaults()))
    assert overridden.returncode == 0, overridden.stderr
    assert json.loads(overridden.stdout) == {
        **json.loads(json.dumps(_library_defaults())),
        "SAGAS_DISPATCH_LEASE": 7.5,
        "SAGAS_SWEEP_BATCH": 20,
        "SAGAS_SWEEP_STALE_AFTER": 45.0,
        "SAGAS_PARTICIPANTS": {"warehouse": "s3cret"},
        "SAGAS_DEFINITION_MODULES": ["orders.sagas", "orders.choreography"],
        "SAGA_EVENTS_QUEUES": ["celery", "warehouse"],
        "SAGA_EVENTS_TRACK": False,
    }


def _database_options(**env: str) -> dict[str, object]:
    code = (
        "import json, django; django.setup(); from django.conf import settings;"
        " print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_clean_env(DJANGO_DEBUG="true", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    options: dict[str, object] = json.loads(result.stdout)
    return options


def test_postgresql_binds_and_prepares_on_the_server_unless_turned_off() -> None:
    url = "postgres://shop:secret@127.0.0.1:5432/shop"

    assert _database_options(DATABASE_URL=url) == {
        "server_side_binding": True,
        "prepare_threshold": 5,
    }
    assert (
        _database_options(DATABASE_URL=url, DATABASE_PREPARED_STATEMENTS="false") == {}
    )
    assert "server_side_binding" not in _database_options(
        DATABASE_URL="sqlite:///:memory:"
    )
