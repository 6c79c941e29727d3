"""Restart all matching in a real browser: 2,000 failed tasks, a confirmation with the count,
then a job in the background whose page follows it live to the end.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write the screenshots the documentation shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from django_tasks_hub.models import BulkJob
from tests.browser.conftest import expect, login
from tests.test_bulk import make_tasks, purge_sink, restarts_per_task

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow]

LIST = "/admin/django_tasks_hub/task/"


@pytest.mark.timeout(600)
def test_restart_all_matching_2000_failed_tasks_in_the_background_each_once(
    page: Any, admin_user: Any, subprocess_worker: Any, tmp_path: Path
) -> None:
    out = Path(os.environ.get("TASKS_HUB_DOCS_IMG") or tmp_path)
    purge_sink()
    make_tasks(2000)
    make_tasks(5, status="done")
    subprocess_worker("--pool=solo", "-Q", "celery")

    page.set_viewport_size({"width": 1400, "height": 900})
    login(page, admin_user, f"{LIST}?status=failed")
    page.click("text=Restart all matching")
    expect(page.locator(".th-bulk__total")).to_have_text("2000")
    expect(page.locator(".th-bulk__eligible")).to_have_text("2000")
    expect(page.locator(".th-bulk")).to_contain_text("runs in the background")
    page.screenshot(path=str(out / "bulk.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(tmp_path / "bulk-390.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    assert not BulkJob.objects.exists(), "the confirmation page changed something"

    page.click(".th-bulk__confirm")
    expect(page.locator(".messagelist")).to_contain_text("running in the background")
    page.evaluate("window.__thMarker = 'kept'")
    # The page follows the job: its count moves without a reload...
    progress = page.locator(".field-progress .th-bulk-progress")
    expect(progress).not_to_have_text("0 of 2,000", timeout=60_000)
    page.screenshot(path=str(out / "bulk-progress.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(tmp_path / "bulk-progress-390.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    # ...to the end.
    expect(page.locator(".field-status_badge .th-badge--done")).to_be_visible(timeout=480_000)
    expect(progress).to_have_text("2,000 of 2,000")
    assert page.evaluate("window.__thMarker") == "kept"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    job = BulkJob.objects.get()
    assert job.background and job.created_by == admin_user
    assert (job.processed, job.succeeded, job.skipped) == (2000, 2000, 0)
    assert restarts_per_task() == {1: 2000, 0: 5}
    purge_sink()
