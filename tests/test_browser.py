"""An operator retries a failed saga in a real browser (headless Chromium).

Screenshots of each step land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sagas.models import Saga
from tests.admin_support import (
    PASSWORD,
    completed_saga,
    failed_saga,
    make_user,
    operator_events,
    pending_saga,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REASON = "warehouse restocked by hand; release again"


@pytest.fixture
def screenshots(artifacts_dir: Path) -> Path:
    path = artifacts_dir / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
        # While Playwright's event loop runs in this thread, Django hands the
        # test other connections than pytest-django's: left open, they keep
        # the test database from being dropped.
        connections.close_all()


def _log_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/sagas/saga/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/sagas/saga/")


def test_operator_retries_a_failed_saga_from_the_browser(
    live_server: Any, browser: Browser, screenshots: Path, settings: Any
) -> None:
    # given
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1
    saga = failed_saga("order:1042")
    completed_saga("order:1041")
    completed_saga("order:1040")
    pending_saga("order:1043")
    make_user("ada", superuser=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})

    # when: log in and filter the list to failed sagas
    _log_in(page, live_server.url, "ada")
    expect(page.locator(".saga-status-counts")).to_contain_text("Failed")
    # The admin's stylesheet is a static file, served like Django's own.
    expect(page.locator(".saga-status-counts .saga-badge").first).to_have_css(
        "border-radius", "10px"
    )
    page.screenshot(path=screenshots / "01-saga-list.png", full_page=True)
    page.locator("#changelist-filter a[href='?status__exact=failed']").click()
    page.wait_for_url(re.compile(r"\?status__exact=failed$"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("order:1042")
    page.screenshot(path=screenshots / "02-failed-sagas.png", full_page=True)

    # when: open it
    rows.first.locator("th a").click()
    page.wait_for_url(re.compile(rf"/admin/sagas/saga/{saga.pk}/change/"))

    # then: the diagram and the timeline show where it stopped
    failed_step = page.locator(
        ".saga-diagram [data-step='step_two'][data-kind='action']"
    )
    expect(failed_step).to_have_attribute("data-status", "failed")
    stuck_compensation = page.locator(
        ".saga-diagram [data-step='step_one'][data-kind='compensation']"
    )
    expect(stuck_compensation).to_have_attribute("data-status", "failed")
    expect(stuck_compensation).to_have_class(re.compile(r"\bsaga-node--current\b"))
    timeline = page.locator("#saga-timeline")
    expect(timeline).to_contain_text("step_one compensation flaked")
    expect(page.locator("tr.saga-event--operator")).to_have_count(0)
    page.screenshot(path=screenshots / "03-failed-saga-detail.png", full_page=True)

    # when: retry with a reason; the button posts the retry action to the list
    retry = page.locator("button.saga-action--retry")
    expect(retry).to_have_css("border-radius", "15px")
    retry.click()
    page.wait_for_url(re.compile(r"/admin/sagas/saga/$"))
    expect(page.locator("body")).to_have_class(
        re.compile(r"\bsaga-operator-action--retry\b")
    )
    expect(page.locator("#saga-selected tbody tr")).to_have_count(1)
    expect(page.locator("#saga-selected")).to_contain_text("order:1042")
    page.fill("#id_reason", REASON)
    page.screenshot(path=screenshots / "04-retry-confirmation.png", full_page=True)
    page.locator("input[type=submit][name=confirm]").click()
    page.wait_for_url(re.compile(rf"/admin/sagas/saga/{saga.pk}/change/"))

    # then: the page reports it and the timeline names the operator
    expect(page.locator(".messagelist .success")).to_contain_text(
        "Retry started: order:1042"
    )
    operator_rows = page.locator("tr.saga-event--operator")
    expect(operator_rows.first).to_contain_text("operator:ada")
    expect(timeline).to_contain_text(f"retry: {REASON}")
    expect(
        page.locator(".saga-diagram [data-step='step_one'][data-kind='compensation']")
    ).to_have_attribute("data-status", "dispatched")
    page.screenshot(path=screenshots / "05-after-retry.png", full_page=True)

    saga.refresh_from_db()
    assert saga.status == "compensating"
    assert {e.actor for e in operator_events(saga.pk)} == {"operator:ada"}
    assert Saga.objects.filter(status="failed").count() == 0
