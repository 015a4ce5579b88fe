"""A health check for load balancers and compose: the database answers."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database answers a query, else 503."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        response = JsonResponse(
            {"status": "unavailable", "detail": "database unavailable"}, status=503
        )
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ok"})
