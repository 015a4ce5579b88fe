"""Operational endpoints: ``include("sagas.urls")`` at the site root."""

from __future__ import annotations

from django.urls import path

from sagas import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="sagas-healthz"),
    path("readyz", health.readyz, name="sagas-readyz"),
    path("metrics", metrics.metrics_view, name="sagas-metrics"),
]
