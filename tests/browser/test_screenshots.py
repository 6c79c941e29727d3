"""The list and the task page as people see them: styled, with real tasks from a worker.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write the screenshots the documentation shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from django_tasks_hub import services
from django_tasks_hub.models import Task
from tests.browser.conftest import (
    BROWSER_QUEUE,
    PATIENCE,
    browser_worker,
    celery_app,
    expect,
    login,
    send,
)
from tests.conftest import wait_for, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_list_and_task_page(page, admin_user, subprocess_worker, tmp_path):
    out = Path(os.environ.get("TASKS_HUB_DOCS_IMG") or tmp_path)
    browser_worker(subprocess_worker, 4)
    ended = [
        send("demo.add", 2, 3),
        send("demo.echo", {"rows": 1200, "file": "exports/2026-11.csv"}),
        send("demo.flaky", fail_times=2),
        send("demo.always_retry"),
        send("demo.tagged"),
    ]
    broken = send("demo.fail", "invoice 1042 has no customer")
    first = celery_app.signature("demo.add", (1, 2), queue=BROWSER_QUEUE)
    (first | celery_app.signature("demo.add", (10,), queue=BROWSER_QUEUE)).delay()
    running = [
        send("demo.long", steps=100, delay=0.1),
        send("demo.long", steps=600, delay=0.1),
    ]
    for result in ended:
        wait_status(result.id, "done", "failed", timeout=PATIENCE)
    wait_status(broken.id, "failed", timeout=PATIENCE)
    services.restart(Task.objects.get(pk=broken.id), admin_user)
    wait_for(
        lambda: Task.objects.filter(pk=broken.id, status="failed", attempts=2).exists(),
        timeout=PATIENCE,
        what="the restarted run to fail again",
    )
    wait_for(
        lambda: Task.objects.filter(status="done", parent__isnull=False).exists(),
        timeout=PATIENCE,
        what="the chain's second task",
    )
    wait_for(
        lambda: all(
            (Task.objects.get(pk=r.id).progress or {}).get("current", 0) >= 20 for r in running
        ),
        timeout=PATIENCE,
        what="the long tasks to make progress",
    )

    page.set_viewport_size({"width": 1400, "height": 900})
    login(page, admin_user)
    failed_badge = page.locator("#result_list .th-badge--failed").first
    expect(failed_badge).to_be_visible()
    # The stylesheet is served and applied: a failed badge is red, a bar has a width.
    assert failed_badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(185, 28, 28)"
    bars = page.locator("#result_list .th-progress__bar")
    expect(bars).to_have_count(2)
    assert bars.first.evaluate("e => e.getBoundingClientRect().width") > 0
    page.screenshot(path=str(out / "admin-task-list.png"))

    page.goto(f"/admin/django_tasks_hub/task/{broken.id}/change/")
    expect(page.locator(".th-traceback")).to_contain_text("ValueError: invoice 1042")
    expect(page.locator(".th-runs tbody tr:has(td.field-attempt)")).to_have_count(2)
    page.screenshot(path=str(out / "admin-task-page.png"), full_page=True)
    assert (out / "admin-task-list.png").stat().st_size > 10_000

    for result in running:
        services.cancel(Task.objects.get(pk=result.id), admin_user)
