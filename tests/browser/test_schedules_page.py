"""The schedules page in a real browser: attention first, the controls, at 1400 and 390 px.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write the screenshot the documentation shows.
"""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery.schedules import crontab
from django.utils import timezone

from django_tasks_hub import schedules
from django_tasks_hub.models import Schedule, ScheduleFire, Task, TaskRun
from django_tasks_hub.states import FireOutcome, ScheduleOrigin, TaskStatus
from tests.browser.conftest import BROWSER_QUEUE, expect, login
from tests.conftest import IN_CI

pytestmark = [pytest.mark.browser]


def sent(name: str, at: datetime.datetime, status: str, runtime: float) -> None:
    broker_id = str(uuid.uuid4())
    task = Task.objects.create(
        id=broker_id, name="reports.export", broker_id=broker_id, schedule=name, status=status
    )
    TaskRun.objects.create(
        task=task,
        name=task.name,
        broker_id=broker_id,
        schedule=name,
        schedule_origin=ScheduleOrigin.BEAT,
        status=status,
        queued_at=at,
        started_at=at,
        finished_at=at + datetime.timedelta(seconds=runtime),
        runtime=runtime,
    )


def fill(now: datetime.datetime) -> None:
    try:
        from django_celery_beat import models as beat
    except ImportError:
        if IN_CI:
            pytest.fail("django-celery-beat (the [beat] extra) is missing: CI installs it")
        pytest.skip("django-celery-beat (the [beat] extra) is not installed")
    hourly = beat.CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
    beat.PeriodicTask.objects.create(
        name="hourly-invoices", task="billing.invoices", crontab=hourly, queue=BROWSER_QUEUE
    )
    every = beat.IntervalSchedule.objects.create(every=5, period=beat.IntervalSchedule.MINUTES)
    beat.PeriodicTask.objects.create(
        name="sync-inventory", task="shop.sync_inventory", interval=every, queue=BROWSER_QUEUE
    )
    definitions = schedules.periodic_task_definitions()
    definitions.update(
        schedules.beat_schedule_definitions(
            {
                "nightly-export": {"task": "reports.export", "schedule": crontab(minute=0, hour=2)},
                "cleanup": {"task": "maintenance.cleanup", "schedule": 3600},
            }
        )
    )
    schedules.sync(definitions, now=now - datetime.timedelta(seconds=30))
    day = datetime.timedelta(days=1)
    for n, status in enumerate([TaskStatus.DONE, TaskStatus.DONE, TaskStatus.FAILED]):
        sent("nightly-export", now - (3 - n) * day, status, 40.0 + n)
    for n in range(12):
        sent("sync-inventory", now - datetime.timedelta(minutes=5 * (12 - n)), TaskStatus.DONE, 1.5)
    for n in range(6):
        sent("cleanup", now - datetime.timedelta(hours=6 - n), TaskStatus.DONE, 0.4)
    invoices = Schedule.objects.get(name="hourly-invoices")
    for hours in (3, 2):
        ScheduleFire.objects.create(
            schedule=invoices,
            fire_at=now.replace(minute=0, second=0, microsecond=0)
            - datetime.timedelta(hours=hours),
            outcome=FireOutcome.MISSED,
        )


def test_schedules_page(page: Any, admin_user: Any, tmp_path: Path) -> None:
    out = Path(os.environ.get("TASKS_HUB_DOCS_IMG") or tmp_path)
    fill(timezone.now())
    page.set_viewport_size({"width": 1400, "height": 700})
    login(page, admin_user, "/admin/django_tasks_hub/schedule/")
    rows = page.locator("#th-schedules tbody tr")
    expect(rows).to_have_count(4)
    # Those needing attention first: the missed fire times, then the failed last run.
    expect(rows.nth(0)).to_contain_text("hourly-invoices")
    expect(rows.nth(1)).to_contain_text("nightly-export")
    expect(rows.nth(1)).to_contain_text("crontab 0 2 * * * (UTC)")
    assert "th-needs-attention" in (rows.nth(0).get_attribute("class") or "")
    expect(page.locator(".th-attention").first).to_contain_text("2 need attention")
    badge = rows.nth(1).locator(".th-badge--failed").last
    assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(185, 28, 28)"
    # Run now, enable, disable: only django-celery-beat's schedules have them.
    expect(rows.nth(0).locator("button", has_text="Run now")).to_be_visible()
    expect(rows.nth(1).locator("button")).to_have_count(0)
    page.screenshot(path=str(out / "schedules.png"), full_page=True)

    rows.nth(0).locator("button", has_text="Disable").click()
    expect(page.locator(".messagelist")).to_contain_text("Disabled hourly-invoices.")
    assert not Schedule.objects.get(name="hourly-invoices").enabled

    page.set_viewport_size({"width": 390, "height": 800})
    page.reload()
    table = page.locator(".th-table-scroll")
    expect(table).to_be_visible()
    # The table scrolls inside its box; the page itself does not scroll sideways.
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 400, width
    page.screenshot(path=str(tmp_path / "schedules-390.png"), full_page=True)
    assert (out / "schedules.png").stat().st_size > 10_000
