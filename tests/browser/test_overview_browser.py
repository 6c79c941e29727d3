"""The overview in a real browser: its numbers match the rows, at 1400 px and at 390 px.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write ``overview.png`` for the documentation.
"""

from __future__ import annotations

import datetime
import os
import random
import uuid
from pathlib import Path

import pytest
from django.db.models import Count, Q
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun
from tests.browser.conftest import PATIENCE, browser_worker, expect, login, send
from tests.conftest import wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]

OVERVIEW = "/admin/django_tasks_hub/task/overview/"


def history(hours: int = 20) -> None:
    """Runs that ended over the last hours, as the recorder leaves them (the triggers count
    them): something for the charts to draw besides the minute the worker just ran."""
    rng = random.Random(15)
    now = timezone.now()
    names = {"reports.build": 0.05, "mail.send": 0.02, "billing.invoice": 0.2}
    errors = ["TimeoutError: upstream took too long", "KeyError: 'customer'"]
    for _ in range(240):
        name = rng.choice(list(names))
        finished = now - datetime.timedelta(minutes=rng.triangular(1, hours * 60, 30))
        failed = rng.random() < names[name]
        runtime = rng.lognormvariate(-0.5, 1.0)
        started = finished - datetime.timedelta(seconds=runtime)
        queued = started - datetime.timedelta(seconds=rng.lognormvariate(-2, 1.2))
        broker_id = str(uuid.uuid4())
        task = Task.objects.create(name=name, broker_id=broker_id, created_at=queued)
        run = TaskRun.objects.create(task=task, name=name, broker_id=broker_id, queued_at=queued)
        status = "failed" if failed else "done"
        Task.objects.filter(pk=task.pk).update(status=status, finished_at=finished)
        TaskRun.objects.filter(pk=run.pk).update(
            status=status,
            started_at=started,
            finished_at=finished,
            runtime=runtime,
            error=rng.choice(errors) if failed else "",
        )


def test_overview_numbers_match_the_rows(page, admin_user, subprocess_worker, tmp_path):
    out = Path(os.environ.get("TASKS_HUB_DOCS_IMG") or tmp_path)
    browser_worker(subprocess_worker, 2)
    ran = [send("demo.add", i, 1) for i in range(4)]
    broken = [send("demo.fail", f"invoice {n} has no customer") for n in (1042, 1043)]
    for result in ran:
        wait_status(result.id, "done", timeout=PATIENCE)
    for result in broken:
        wait_status(result.id, "failed", timeout=PATIENCE)
    history()
    Task.objects.create(name="reports.build", broker_id=str(uuid.uuid4()))  # Pending.

    page.set_viewport_size({"width": 1400, "height": 1000})
    login(page, admin_user, next_url="/admin/django_tasks_hub/")
    page.click("a.th-app-link")
    page.wait_for_url(f"**{OVERVIEW}")
    for status, count in Task.objects.values_list("status").annotate(n=Count("id")):
        card = page.locator(f'a[data-status="{status}"] .th-card__count')
        expect(card).to_have_text(str(count))
    day = timezone.now() - datetime.timedelta(hours=23, minutes=59)
    per_name = (
        TaskRun.objects.filter(finished_at__gte=day.replace(minute=0, second=0, microsecond=0))
        .values("name")
        .annotate(runs=Count("id"), failed=Count("id", filter=Q(status="failed")))
    )
    for row in per_name:
        line = page.locator(f'#th-names-table tr[data-name="{row["name"]}"]')
        expect(line.locator(".th-runs")).to_have_text(str(row["runs"]))
        expect(line.locator(".th-failed")).to_have_text(str(row["failed"]))
    top = page.locator("#th-errors-table .th-count").first
    expect(top).to_be_visible()
    # The charts are drawn, in the page, with a bar per minute and per hour.
    assert page.locator("svg.th-chart").count() == 2
    assert page.locator("svg.th-chart").first.locator("a.th-chart__bar").count() >= 60
    page.screenshot(path=str(out / "overview.png"), full_page=True)
    assert (out / "overview.png").stat().st_size > 10_000

    # A figure leads to its rows: the failed runs of demo.fail.
    page.locator('#th-names-table tr[data-name="demo.fail"] .th-failed').click()
    page.wait_for_url("**/taskrun/?**")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(OVERVIEW)
    expect(page.locator("svg.th-chart").first).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width} px wide at 390 px"
    page.screenshot(path=str(tmp_path / "overview-390.png"), full_page=True)
    page.screenshot(path=str(Path(tmp_path) / "overview-390-top.png"))
    print(f"screenshots: {out / 'overview.png'}, {tmp_path / 'overview-390.png'}")
