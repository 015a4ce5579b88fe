from __future__ import annotations

from django.apps import AppConfig


class ShippingConfig(AppConfig):
    name = "shipping"
