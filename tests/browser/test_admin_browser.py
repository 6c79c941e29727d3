"""The admin in a real browser, against the live server and a real Celery worker."""

from __future__ import annotations

import re

import pytest

from django_tasks_hub.models import Task
from tests.browser.conftest import PATIENCE, browser_worker, expect, login, send
from tests.conftest import wait_for, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def task_url(pk: object) -> str:
    return f"/admin/django_tasks_hub/task/{pk}/change/"


def test_restart_the_failed_tasks(page, admin_user, subprocess_worker):
    browser_worker(subprocess_worker, 2)
    broken = [send("demo.fail", f"broken input {i}") for i in range(2)]
    fine = send("demo.add", 2, 2)
    for result in broken:
        wait_status(result.id, "failed", timeout=PATIENCE)
    wait_status(fine.id, "done", timeout=PATIENCE)

    login(page, admin_user)
    page.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True).click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator(".th-badge--failed")).to_have_count(2)

    page.locator("#action-toggle").check()
    page.select_option("select[name=action]", label="Restart selected tasks")
    page.locator("button[name=index]").click()
    expect(page.locator(".messagelist .success")).to_contain_text(
        "2 tasks restarted. See them in the list."
    )

    # The new runs go through the worker and finish (demo.fail fails again, as it must).
    for result in broken:
        task = wait_for(
            lambda r=result: Task.objects.filter(pk=r.id, attempts=2, status="failed").first(),
            timeout=PATIENCE,
            what=f"the restarted run of {result.id} to finish",
        )
        run = task.runs.order_by("-id").first()
        assert (run.trigger, run.status, run.triggered_by_id) == (
            "restart",
            "failed",
            admin_user.pk,
        )
        assert run.finished_at is not None and run.broker_id != result.id

    page.goto(task_url(broken[0].id))
    history = page.locator(".inline-related tbody tr:has(td.field-attempt)")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("Restart")
    expect(history.first).to_contain_text("admin")
    expect(history.nth(1)).to_contain_text("Initial")
    expect(page.locator(".field-error_text pre")).to_contain_text("broken input 0")
    # Ended again: Restart is offered, Cancel is not.
    expect(page.get_by_role("button", name="Restart")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    assert Task.objects.get(pk=fine.id).attempts == 1


def test_cancel_a_long_running_task(page, admin_user, subprocess_worker):
    worker = browser_worker(subprocess_worker, 2)
    result = send("demo.long", steps=600, delay=0.1)
    wait_for(
        lambda: Task.objects.filter(
            pk=result.id, status="processing", progress__isnull=False
        ).exists(),
        timeout=PATIENCE,
        what="the long task to report progress",
    )

    login(page, admin_user, task_url(result.id))
    expect(page.locator("div.field-status_badge .th-badge--processing")).to_be_visible()
    expect(page.locator(".field-progress_display .th-progress")).to_be_visible()
    expect(page.get_by_role("button", name="Restart")).to_have_count(0)
    # Cancel asks first: dismissing the question sends nothing, accepting it cancels.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("div.field-status_badge .th-badge--processing")).to_be_visible()
    assert Task.objects.get(pk=result.id).status == "processing"
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel task").click()

    expect(page.locator(".messagelist .success")).to_contain_text("was cancelled")
    expect(page.locator("div.field-status_badge .th-badge--canceled")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)

    # It stops: the worker kills the process running it, and the task never finishes.
    wait_for(
        lambda: f"Terminating {result.id}" in worker.output(),
        timeout=PATIENCE,
        what="the worker to terminate it",
    )
    task = Task.objects.get(pk=result.id)
    assert task.status == "canceled" and task.result is None
    run = task.runs.get()
    assert run.status == "canceled" and run.canceled_by_id == admin_user.pk
    assert f"Task demo.long[{result.id}] succeeded" not in worker.output()
