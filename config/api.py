"""The project's JSON API; its OpenAPI schema is at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import ValidationError

from orders.api import router as orders_router
from sagas.api import router as sagas_router
from sagas.participants import router as participants_router

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
