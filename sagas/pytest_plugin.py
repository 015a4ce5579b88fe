"""pytest fixtures for testing sagas against a real worker (a ``pytest11`` plugin).

Installed with the package and loaded by pytest automatically:

- ``sagas_broker_env`` (session, automatic): when the Celery broker is the
  filesystem one, point it at a folder of this test session's own, so that
  messages published by tests (``django_db(transaction=True)`` runs on-commit
  hooks) never reach the development broker folder or its worker. Returns the
  environment (``SAGAS_BROKER_FOLDER``) for worker subprocesses.
- ``saga_worker``: a real Celery worker, in this process (a thread), consuming
  from the session's broker and writing to the test database. Needs a
  transactional database (it requests ``transactional_db``).
- ``saga_clock``: a ``sagas.testing.SagaClock`` started for the test.

Disable with ``-p no:sagas``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _celery_app() -> Any:
    from celery import current_app

    # The proxy's target: settings changed on it must stick.
    return current_app._get_current_object()  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def sagas_broker_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Give this session's publishers and workers a broker folder of their own."""
    try:
        from django.conf import settings

        configured = settings.configured
    except ImportError:  # pragma: no cover - Django is a dependency
        configured = False
    if not configured:
        return {}
    app = _celery_app()
    url = str(app.conf.broker_url or "")
    if not url.startswith("filesystem"):
        # Redis and others: the test settings name the test broker.
        return {}
    folder: Path = tmp_path_factory.mktemp("broker")
    (folder / "processed").mkdir()
    options = dict(app.conf.broker_transport_options or {})
    options.update(
        data_folder_in=str(folder),
        data_folder_out=str(folder),
        processed_folder=str(folder / "processed"),
        control_folder=str(folder / "control"),
    )
    app.conf.broker_transport_options = options
    # Pools made before this point would still write to the old folder; the
    # next publish builds new ones from the options above.
    app._pool = None
    app.amqp._producer_pool = None
    return {"SAGAS_BROKER_FOLDER": str(folder)}


@pytest.fixture
def saga_worker(
    transactional_db: None, sagas_broker_env: dict[str, str]
) -> Iterator[Any]:
    """Run a real Celery worker in this process while the test runs.

    It consumes what the test publishes (steps are sent after COMMIT, so use
    ``django_db(transaction=True)``) and runs steps through the engine on the
    test database; wait with ``sagas.testing.wait_for_sagas``.
    """
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    def close_connections(**kwargs: Any) -> None:
        # The worker thread's connections must not outlive the test database.
        connections.close_all()

    task_postrun.connect(close_connections, weak=False, dispatch_uid="sagas.worker")
    app = _celery_app()
    app.loader.import_default_modules()
    try:
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ) as worker:
            yield worker
    finally:
        task_postrun.disconnect(dispatch_uid="sagas.worker")


@pytest.fixture
def saga_clock() -> Iterator[Any]:
    """Python's and the database's clock, moved together by ``advance(seconds)``."""
    from sagas.testing import SagaClock

    with SagaClock() as clock:
        yield clock
