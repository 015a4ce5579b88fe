from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.db import connections

from sagas.processes import Beat, Worker
from tests.brokers import SUITE_BROKER_URL, Broker, publishing_to
from tests.processes import ROOT
from tests.services import RabbitMQ, RedisServer


def _database_url(alias: str) -> str:
    db = connections[alias].settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/"
        f"{db['NAME']}"
    )


def _require_services() -> None:
    if connections["default"].vendor == "sqlite":
        # The embedded default: SQLite files and the filesystem broker.
        return
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres") or not os.environ.get(
        "CELERY_BROKER_URL", ""
    ).startswith("redis"):
        pytest.fail(
            "integration tests need PostgreSQL and Redis: run them with `make test` "
            "(it starts both), or set DATABASE_URL and CELERY_BROKER_URL",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("SAGAS_TEST_ARTIFACTS", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def process_env(
    django_db_setup: Any,
    tmp_path_factory: pytest.TempPathFactory,
    sagas_broker_env: dict[str, str],
) -> dict[str, str]:
    """Return the environment for worker and beat processes: the test database.

    On SQLite the processes share the test database files and the session's
    own broker folder (never the development one); otherwise PostgreSQL and
    the test Redis, flushed first.
    """
    _require_services()
    var = tmp_path_factory.mktemp("var")
    if connections["default"].vendor != "sqlite":
        redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    return {
        **os.environ,
        **sagas_broker_env,
        "DATABASE_URL": _database_url("default"),
        "SANDBOX_DATABASE_URL": _database_url("sandbox"),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SAGAS_VAR_DIR": str(var),
        "EMAIL_FILE_PATH": str(var / "mail"),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Path:
    path = artifacts_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server of this session's own, which tests may stop and start."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A RabbitMQ node of this session's own, which tests may stop and start."""
    with RabbitMQ(tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, process_env: dict[str, str]
) -> Iterator[Broker]:
    """The broker of a test: the suite's Redis, or the session's server of the
    kind named by an indirect parameter ("redis" or "rabbitmq").

    Workers and beat started for the test use it, and so does this process.
    """
    name = getattr(request, "param", None)
    if name is None:
        yield Broker("redis", SUITE_BROKER_URL)
        return
    server = request.getfixturevalue(f"{name}_server")
    with publishing_to(server.url):
        yield Broker(name, server.url, server)


@pytest.fixture
def broker_env(broker: Broker) -> dict[str, str]:
    # The embedded suite names no broker URL: its processes use the default.
    return {"CELERY_BROKER_URL": broker.url} if broker.url else {}


@pytest.fixture(scope="module")
def worker(process_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    """A real Celery worker (prefork, 2 processes) shared by a test module."""
    process = Worker("worker", process_env, log_dir, cwd=ROOT).start()
    yield process
    process.stop()


@pytest.fixture
def start_worker(
    process_env: dict[str, str], log_dir: Path, broker_env: dict[str, str]
) -> Iterator[Any]:
    """Start extra workers (own env overrides) for one test; stop them after."""
    started: list[Worker] = []

    def start(
        name: str, *, concurrency: int = 2, wrapper: tuple[str, ...] = (), **env: str
    ) -> Worker:
        process = Worker(
            name,
            {**process_env, **broker_env, **env},
            log_dir,
            concurrency=concurrency,
            wrapper=wrapper,
            cwd=ROOT,
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_beat(
    process_env: dict[str, str], log_dir: Path, broker_env: dict[str, str]
) -> Iterator[Any]:
    """Start celery-beat processes for one test (by default, schedule installed)."""
    started: list[Beat] = []

    def start(
        name: str = "beat", *, every: float = 1.0, install: bool = True, **env: str
    ) -> Beat:
        # Without ``install``, beat installs the schedule itself (every
        # SAGAS_SWEEP_INTERVAL, taken from ``env`` like any setting).
        if install:
            call_command("install_sweepers", every=every, verbosity=0)
        process = Beat(name, {**process_env, **broker_env, **env}, log_dir, cwd=ROOT)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def catalogue(transactional_db: Any) -> None:
    call_command("seed_catalog", stock=100, verbosity=0)
