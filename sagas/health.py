"""Liveness and readiness endpoints for load balancers and orchestrators.

``/healthz`` answers as long as the process serves requests. ``/readyz`` also
checks the database and the broker, and answers 503 with the reason when one
of them is down, so traffic goes elsewhere until it is back.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

# A readiness probe must answer well within the probe's own timeout.
BROKER_TIMEOUT = 2


def check_database() -> None:
    """Run ``SELECT 1`` on the default database."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    """Open (and close) one connection to the Celery broker."""
    from celery import current_app

    with current_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
}


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process can serve requests (liveness)."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database and broker answer, else 503 naming the failure."""
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"[:500]
        else:
            checks[name] = "ok"
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
