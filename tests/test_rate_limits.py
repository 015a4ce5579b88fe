"""Rate limits: checkout per client address (Redis-backed), admin login lockout."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from orders.models import Order
from tests.admin_support import PASSWORD, make_user
from tests.helpers import order_body, post_order

pytestmark = pytest.mark.django_db


def _address() -> str:
    # A documentation-range address per test: counters never leak between runs.
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(autouse=True)
def _catalogue() -> None:
    call_command("seed_catalog", stock=100, verbosity=0)


def test_checkout_is_throttled_per_client_with_retry_after(settings: Any) -> None:
    # given
    settings.ORDERS_CHECKOUT_RATE = "3/min"
    address = _address()
    client = Client(REMOTE_ADDR=address)
    other = Client(REMOTE_ADDR=_address())

    # when
    allowed = [post_order(client, order_body()).status_code for _ in range(3)]
    throttled = post_order(client, order_body())
    elsewhere = post_order(other, order_body())

    # then
    assert allowed == [202, 202, 202]
    assert throttled.status_code == 429
    assert throttled["Content-Type"] == "application/json; charset=utf-8"
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert throttled.json()["detail"]
    assert elsewhere.status_code == 202
    assert Order.objects.count() == 4


def test_checkout_counters_live_in_redis(settings: Any) -> None:
    # given: the cache the project configures for tests is Redis, as in production
    backend = django_settings.CACHES["default"]["BACKEND"]
    settings.ORDERS_CHECKOUT_RATE = "5/min"
    address = _address()

    # when
    post_order(Client(REMOTE_ADDR=address), order_body())

    # then
    assert backend == "django.core.cache.backends.redis.RedisCache"
    assert len(cache.get(f"throttle_checkout_{address}")) == 1


def test_throttled_checkout_behind_proxy_counts_the_client_not_the_proxy(
    settings: Any,
) -> None:
    # given: one proxy in front; two clients behind it
    settings.ORDERS_CHECKOUT_RATE = "1/min"
    settings.NINJA_NUM_PROXIES = 1
    from ninja.conf import settings as ninja_settings

    ninja_settings.NUM_PROXIES = 1
    proxy = _address()
    try:
        first = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=_address())
        second = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=_address())

        # when / then
        assert post_order(first, order_body()).status_code == 202
        assert post_order(second, order_body()).status_code == 202
        assert post_order(first, order_body()).status_code == 429
    finally:
        ninja_settings.NUM_PROXIES = None


def test_admin_login_brute_force_is_locked_out(settings: Any) -> None:
    # given
    settings.AXES_FAILURE_LIMIT = 3
    make_user("admin", superuser=True)
    client = Client(REMOTE_ADDR="192.0.2.10")

    # when: three wrong guesses, then the right password
    for guess in ("123456", "password", "admin"):
        client.post("/admin/login/", {"username": "admin", "password": guess})
    locked = client.post("/admin/login/", {"username": "admin", "password": PASSWORD})

    # then
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    fresh = Client(REMOTE_ADDR="192.0.2.11")
    fresh.post("/admin/login/", {"username": "admin", "password": PASSWORD})
    assert "_auth_user_id" in fresh.session
