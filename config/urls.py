from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from config.api import api, not_found
from config.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # /healthz, /readyz and /metrics
    path("", include("sagas.urls")),
    # After the API's own routes: an id that does not match a path pattern
    # (``/api/orders/42/``) is a JSON 404 too, not Django's HTML page.
    re_path(r"^api/(?P<path>.*)$", not_found),
    path("healthz/", healthz, name="healthz"),
]
