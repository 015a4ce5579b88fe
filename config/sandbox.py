"""Behaviour shared by the sandbox providers."""

from __future__ import annotations

import time

from django.conf import settings


def network_latency() -> None:
    """Sleep for ``SANDBOX_LATENCY_MS``, as a call to a remote provider would."""
    latency = getattr(settings, "SANDBOX_LATENCY_MS", 0)
    if latency:
        time.sleep(latency / 1000)
