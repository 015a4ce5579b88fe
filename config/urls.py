from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from config.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # /healthz, /readyz and /metrics
    path("", include("sagas.urls")),
]
