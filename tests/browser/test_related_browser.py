"""RelatedTasksInline and the insights page in a real browser, against a real Celery worker."""

from __future__ import annotations

import re

import pytest

from django_tasks_hub.models import Task
from testproject.models import Order
from tests.browser.conftest import PATIENCE, browser_worker, expect, login, send
from tests.conftest import ROOT, wait_for, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]

IMG = ROOT / "docs" / "img"


def shots(page, name: str, *, keep: bool) -> None:
    """Screenshots at 1400 px (kept in docs/img when ``keep``) and at 390 px (var/)."""
    from tests.browser.conftest import screenshot_dir

    target = screenshot_dir()
    target.mkdir(parents=True, exist_ok=True)
    for width in (1400, 390):
        page.set_viewport_size({"width": width, "height": 900})
        path = IMG / f"{name}.png" if keep and width == 1400 else target / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})


def test_an_orders_page_shows_its_tasks_and_restarts_one(page, admin_user, subprocess_worker):
    browser_worker(subprocess_worker, 2)
    order = Order.objects.create(number="SO-1042", customer="Ada")
    other = Order.objects.create(number="SO-1043", customer="Grace")
    first = send("shop.process_order", order.pk)
    second = send("shop.process_order", order_id=order.pk, note="gift wrap")
    send("shop.process_order", other.pk)
    for result in (first, second):
        wait_status(result.id, "done", timeout=PATIENCE)

    url = f"/admin/testproject/order/{order.pk}/change/"
    login(page, admin_user, url)
    rows = page.locator(".th-related tbody tr:has(td.field-task_status)")
    expect(rows).to_have_count(2)
    expect(rows.locator(".th-badge--done")).to_have_count(2)
    expect(rows.first).to_contain_text("shop.process_order")
    shots(page, "admin-related-tasks", keep=True)

    rows.first.get_by_role("button", name="Restart").click()
    expect(page).to_have_url(re.compile(rf"/admin/testproject/order/{order.pk}/change/$"))
    expect(page.locator(".messagelist .success")).to_contain_text("restarted")
    restarted = wait_for(
        lambda: Task.objects.filter(
            pk__in=[first.id, second.id], attempts=2, status="done"
        ).first(),
        timeout=PATIENCE,
        what="the restarted task to run again",
    )
    assert restarted.runs.count() == 2

    page.goto("/admin/django_tasks_hub/taskrun/insights/")
    expect(page.locator("#th-cost")).to_contain_text("shop.process_order")
    expect(page.locator(".th-releases").first).to_be_visible()
    shots(page, "admin-insights", keep=True)
