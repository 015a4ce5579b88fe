"""The project's JSON API; its OpenAPI schema is at ``/api/openapi.json``.

Every answer is JSON, errors included: 400 malformed or invalid input, 401/403
missing rights, 404 unknown ids and paths, 409/422 conflicts, 413 oversized
bodies, 429 throttled and 503 database unavailable (both with ``Retry-After``).
"""

from __future__ import annotations

from typing import Any

import structlog
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import ValidationError

from orders.api import router as orders_router
from sagas.api import router as sagas_router
from sagas.participants import router as participants_router

log = structlog.get_logger("config.api")

# Seconds a client should wait before retrying while the database is away.
DATABASE_RETRY_AFTER = 5

api = NinjaAPI(
    title="Sagas shop",
    version="1.0",
    description="Guest checkout run as a saga, order tracking, saga inspection.",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
api.add_router("/orders", orders_router)
api.add_router("/sagas", sagas_router)
api.add_router("/participants", participants_router)


def _field(location: list[Any] | tuple[Any, ...]) -> str:
    # Drop ninja's "body"/"payload" prefix: clients know fields by their JSON path.
    parts = [str(p) for p in location if p not in ("body", "payload", "header")]
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {"field": _field(error.get("loc", ())), "message": error.get("msg", "invalid")}
        for error in exc.errors
    ]
    fields = ", ".join(dict.fromkeys(error["field"] for error in errors))
    return api.create_response(
        request, {"detail": f"invalid input: {fields}", "errors": errors}, status=400
    )


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # Django refuses to read a body past DATA_UPLOAD_MAX_MEMORY_SIZE.
    return api.create_response(
        request, {"detail": "request body too large", "errors": []}, status=413
    )


def _database_unavailable(request: HttpRequest, exc: Any) -> HttpResponse:
    log.warning("api.database_unavailable", path=request.path, error=str(exc))
    response = api.create_response(
        request,
        {"detail": "service temporarily unavailable, retry later", "errors": []},
        status=503,
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


# Connection refused or lost, a failover, a serialization failure: all pass.
api.add_exception_handler(OperationalError, _database_unavailable)
api.add_exception_handler(InterfaceError, _database_unavailable)


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    # Never a traceback or an HTML page to a client, whatever DEBUG says.
    log.exception("api.unexpected_error", path=request.path)
    return api.create_response(
        request, {"detail": "internal error", "errors": []}, status=500
    )


def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Answer a JSON 404 for any path under the API that no operation matches."""
    return api.create_response(
        request, {"detail": "not found", "errors": []}, status=404
    )
