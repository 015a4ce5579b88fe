"""The domain apps' admin: read-mostly pages linked to and from their saga."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from inventory.models import Product, Reservation
from orders.models import Order
from payments.models import GatewayCharge, GatewayFault, GatewayLedgerEntry, Payment
from sagas.admin.viewonly import ViewOnlyAdmin
from sagas.testing import run_saga_inline
from shipping.models import CarrierBooking, Shipment
from tests.admin_support import change_url, logged_in, make_user
from tests.helpers import place_order

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Model, its changelist URL, and how to pick the rows of one saga.
RECORDS = [
    (Order, "/admin/orders/order/", "saga_id"),
    (Reservation, "/admin/inventory/reservation/", "saga_id"),
    (Payment, "/admin/payments/payment/", "saga_id"),
    (Shipment, "/admin/shipping/shipment/", "saga_id"),
    (GatewayCharge, "/admin/payments/gatewaycharge/", "key__startswith"),
    (CarrierBooking, "/admin/shipping/carrierbooking/", "key__startswith"),
]


def _order_saga(**kwargs: Any) -> str:
    placed = place_order(Client(), **kwargs)
    run_saga_inline(placed["saga_id"])
    return str(placed["saga_id"])


def _rows(model: Any, lookup: str, saga_id: str) -> list[Any]:
    value = f"{saga_id}:" if lookup.endswith("startswith") else saga_id
    return list(model._default_manager.filter(**{lookup: value}))


def test_saga_page_links_to_every_record_of_the_saga(
    catalogue: None, admin_client: Client
) -> None:
    # given
    saga_id = _order_saga(items=[("WIDGET-1", 1), ("GIZMO-1", 1)])

    # when
    html = admin_client.get(change_url(saga_id)).content.decode()

    # then
    for model, changelist, lookup in RECORDS:
        rows = _rows(model, lookup, saga_id)
        assert rows, model
        for row in rows:
            assert f'href="{changelist}{row.pk}/change/"' in html, model


def test_each_record_page_links_back_to_its_saga(
    catalogue: None, admin_client: Client
) -> None:
    # given
    saga_id = _order_saga()
    link = f'href="{change_url(saga_id)}"'

    for model, changelist, lookup in RECORDS:
        [row] = _rows(model, lookup, saga_id)[:1]

        # when
        listing = admin_client.get(changelist)
        page = admin_client.get(f"{changelist}{row.pk}/change/")

        # then
        assert listing.status_code == 200, model
        assert link in listing.content.decode(), model
        assert page.status_code == 200, model
        assert link in page.content.decode(), model


def test_search_by_saga_id_finds_the_records_of_that_saga_only(
    catalogue: None, admin_client: Client
) -> None:
    # given
    saga_id = _order_saga()
    other = _order_saga()

    for model, changelist, lookup in RECORDS:
        # when
        found = admin_client.get(changelist, {"q": saga_id}).context["cl"].result_list
        none = admin_client.get(changelist, {"q": str(uuid.uuid4())}).context["cl"]

        # then
        assert {row.pk for row in found} == {
            row.pk for row in _rows(model, lookup, saga_id)
        }, model
        assert not {row.pk for row in found} & {
            row.pk for row in _rows(model, lookup, other)
        }
        assert list(none.result_list) == [], model


def test_order_page_shows_its_lines_and_a_search_by_order_id_finds_it(
    catalogue: None, admin_client: Client
) -> None:
    # given
    saga_id = _order_saga(items=[("WIDGET-1", 2), ("GIZMO-1", 1)])
    order = Order.objects.get(saga_id=saga_id)

    # when
    page = admin_client.get(f"/admin/orders/order/{order.pk}/change/")
    found = admin_client.get("/admin/orders/order/", {"q": str(order.pk)})

    # then
    html = page.content.decode()
    assert "WIDGET-1" in html
    assert "GIZMO-1" in html
    assert [o.pk for o in found.context["cl"].result_list] == [order.pk]


@pytest.mark.parametrize(
    ("model", "changelist"),
    [(model, changelist) for model, changelist, _ in RECORDS]
    + [(GatewayLedgerEntry, "/admin/payments/gatewayledgerentry/")],
)
def test_saga_records_cannot_be_added_changed_or_deleted(
    catalogue: None, admin_client: Client, model: Any, changelist: str
) -> None:
    # given
    _order_saga()
    row = model._default_manager.first()
    count = model._default_manager.count()

    # when
    add = admin_client.get(f"{changelist}add/")
    change = admin_client.post(f"{changelist}{row.pk}/change/", {"status": "x"})
    delete = admin_client.post(f"{changelist}{row.pk}/delete/", {"post": "yes"})

    # then
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert model._default_manager.count() == count
    assert getattr(model._default_manager.get(pk=row.pk), "status", None) == getattr(
        row, "status", None
    )


def test_product_name_and_price_are_editable_but_not_stock(
    catalogue: None, admin_client: Client
) -> None:
    # given
    product = Product.objects.get(sku="WIDGET-1")

    # when
    response = admin_client.post(
        f"/admin/inventory/product/{product.pk}/change/",
        {"name": "Widget XL", "price_cents": 2500, "stock_free": 0, "sku": "HACKED"},
    )
    delete = admin_client.post(
        f"/admin/inventory/product/{product.pk}/delete/", {"post": "yes"}
    )

    # then
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.sku, product.name, product.price_cents, product.stock_free) == (
        "WIDGET-1",
        "Widget XL",
        2500,
        100,
    )
    assert delete.status_code == 403


def test_gateway_faults_can_be_injected_and_removed(admin_client: Client) -> None:
    # when
    added = admin_client.post(
        "/admin/payments/gatewayfault/add/",
        {"operation": "refund", "remaining": -1, "message": "bank holiday"},
    )
    fault = GatewayFault.objects.get()
    removed = admin_client.post(
        f"/admin/payments/gatewayfault/{fault.pk}/delete/", {"post": "yes"}
    )

    # then
    assert added.status_code == 302
    assert (fault.operation, fault.remaining) == ("refund", -1)
    assert removed.status_code == 302
    assert not GatewayFault.objects.exists()


@pytest.mark.parametrize(
    "changelist",
    [changelist for _, changelist, _ in RECORDS]
    + ["/admin/payments/gatewayledgerentry/", "/admin/inventory/product/"],
)
def test_record_changelists_run_fixed_queries(
    catalogue: None, admin_client: Client, changelist: str
) -> None:
    # given
    _order_saga()
    admin_client.get(changelist)
    with (
        CaptureQueriesContext(connection) as default_one,
        CaptureQueriesContext(connections["sandbox"]) as sandbox_one,
    ):
        admin_client.get(changelist)
    for _ in range(4):
        _order_saga()

    # when
    with (
        CaptureQueriesContext(connection) as default_many,
        CaptureQueriesContext(connections["sandbox"]) as sandbox_many,
    ):
        response = admin_client.get(changelist)

    # then
    assert response.status_code == 200
    assert len(default_many.captured_queries) == len(default_one.captured_queries)
    assert len(sandbox_many.captured_queries) == len(sandbox_one.captured_queries)


def test_saga_page_lists_only_records_the_operator_may_view(catalogue: None) -> None:
    # given: an operator who may view sagas and orders, nothing else
    saga_id = _order_saga()
    operator = make_user("operator", perms=["view_saga"])
    operator.user_permissions.add(
        Permission.objects.get(content_type__app_label="orders", codename="view_order")
    )

    # when
    response = logged_in(operator).get(change_url(saga_id))

    # then
    assert [section.label for section in response.context["related"]] == ["Orders"]
    order = Order.objects.get(saga_id=saga_id)
    assert f'href="/admin/orders/order/{order.pk}/change/"' in response.content.decode()


VIEW_ONLY = sorted(
    (model._meta.label, model_admin)
    for model, model_admin in admin.site._registry.items()
    if isinstance(model_admin, ViewOnlyAdmin)
)


def test_every_admin_of_rows_only_code_writes_is_view_only() -> None:
    # given: the admins of rows that the engine and the services write
    labels = {label for label, _ in VIEW_ONLY}

    # then
    assert labels >= {
        "sagas.Saga",
        "saga_events.Flow",
        "saga_events.OutboxEvent",
        *(model._meta.label for model, _, _ in RECORDS),
        "payments.GatewayLedgerEntry",
    }


@pytest.mark.parametrize(("label", "model_admin"), VIEW_ONLY)
def test_a_view_only_admin_shows_every_field_read_only_and_counts_once(
    label: str, model_admin: Any, rf: Any, admin_user: Any
) -> None:
    # given
    request = rf.get("/")
    request.user = admin_user

    # when
    shown = flatten_fieldsets(model_admin.get_fieldsets(request))
    readonly = model_admin.get_readonly_fields(request)

    # then: nothing on the page is a form field, and the list skips COUNT(*)
    assert shown
    assert set(shown) <= set(readonly), label
    assert model_admin.get_form(request)().fields == {}, label
    assert model_admin.show_full_result_count is False
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
