"""Checkout rate limit: orders per client address, counted in the shared cache."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.http import HttpRequest
from ninja.throttling import SimpleRateThrottle
from redis.exceptions import RedisError

log = structlog.get_logger("orders.throttling")


class CheckoutThrottle(SimpleRateThrottle):
    """Allow ``ORDERS_CHECKOUT_RATE`` checkouts per client address.

    The rate is read per request, so it follows the settings. If the cache is
    unreachable the request passes: losing the limit for a while beats
    refusing every order.
    """

    scope = "checkout"

    def __init__(self) -> None:
        super().__init__(rate=settings.ORDERS_CHECKOUT_RATE)

    def get_cache_key(self, request: HttpRequest) -> str | None:
        return self.cache_format % {
            "scope": self.scope,
            "ident": self.get_ident(request),
        }

    def allow_request(self, request: HttpRequest) -> bool:
        self.rate = settings.ORDERS_CHECKOUT_RATE
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request)
        except (RedisError, OSError) as exc:
            log.warning("checkout.throttle_unavailable", error=str(exc))
            return True
