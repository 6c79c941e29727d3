"""The task list and the run list at 1400 px and on a 390 px phone: no column is clipped.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write the 1400 px screenshots the documentation shows
(``task-list.png``, ``run-list.png``); the 390 px ones go to a tmp dir (look at them there).
"""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun
from tests.browser.conftest import expect, login

pytestmark = pytest.mark.browser

ERRORS = [
    "ValueError: invoice 1042 has no customer",
    "celery.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 12.",
    "NotRegistered: 'demo.removed_in_v2'",
]


def _rows() -> None:
    """Rows as a busy site has them: long names, long worker names, errors, every status."""
    now = timezone.now()
    statuses = ["done", "failed", "processing", "retrying", "canceled", "lost", "pending"]
    for i in range(21):
        status = statuses[i % len(statuses)]
        start = now - datetime.timedelta(minutes=i * 7, seconds=i)
        # Days other than today, whatever the clock says when the test runs: "Dec 2, 23:59:59"
        # and "2025-10-28 23:59:59" are wider than a time of today.
        if i % 3 == 1:
            start -= datetime.timedelta(days=1)
        elif i % 5 == 2:
            start -= datetime.timedelta(days=400)
        ended = status in ("done", "failed", "canceled", "lost")
        broker_id = str(uuid.uuid4())
        task = Task.objects.create(
            id=uuid.UUID(broker_id),
            name=f"reports.monthly_sales_export_{i % 4}",
            status=status,
            broker_id=broker_id,
            attempts=1 + i % 3,
            created_at=start,
            updated_at=start,
            started_at=start if status != "pending" else None,
            finished_at=start + datetime.timedelta(seconds=170 + i) if ended else None,
            worker="" if status == "pending" else f"celery@worker-{i % 3}.eu-west-1.example.com",
            error=ERRORS[i % 3] if status in ("failed", "lost", "retrying") else "",
            progress={"current": 30, "total": 100} if status == "processing" else None,
        )
        TaskRun.objects.create(
            task=task,
            name=task.name,
            attempt=task.attempts,
            broker_id=broker_id,
            status=status,
            queued_at=start,
            started_at=task.started_at,
            finished_at=task.finished_at,
            worker=task.worker,
            error=task.error,
            runtime=None if status in ("canceled", "lost") or not ended else 0.042 * i,
            result=5 if status == "done" else None,
        )


def _clipped(page: Any) -> dict[str, Any]:
    """How the result table sits in its box: clipped headers, and whether the box scrolls."""
    return page.evaluate(
        """() => {
        const table = document.querySelector('#result_list');
        const box = table.closest('.results') || table.parentElement;
        const boxRect = box.getBoundingClientRect();
        const style = getComputedStyle(box);
        const scrolls = ['auto', 'scroll'].includes(style.overflowX);
        const clipped = [...table.querySelectorAll('thead th')]
            .filter(th => th.getBoundingClientRect().right > boxRect.right + 1)
            .map(th => th.textContent.trim());
        const widths = [...table.querySelectorAll('thead th')]
            .map(th => th.textContent.trim() + ':' + Math.round(th.getBoundingClientRect().width));
        return {clipped, scrolls, widths, box: box.clientWidth, table: table.scrollWidth,
                overflows: box.scrollWidth > box.clientWidth + 1,
                pageOverflows: document.documentElement.scrollWidth > window.innerWidth + 1};
    }"""
    )


@pytest.mark.parametrize("width", [1400, 390])
@pytest.mark.parametrize(
    ("url", "shot"),
    [
        ("/admin/django_tasks_hub/task/", "task-list"),
        ("/admin/django_tasks_hub/taskrun/", "run-list"),
    ],
)
def test_lists_fit_their_width(
    page: Any, admin_user: Any, tmp_path: Path, width: int, url: str, shot: str
) -> None:
    _rows()
    page.set_viewport_size({"width": width, "height": 1000 if width > 1000 else 844})
    login(page, admin_user, next_url=url)
    expect(page.locator("#result_list tbody tr").first).to_be_visible()
    seen = _clipped(page)
    if width >= 1400:
        # Every column in view, no sideways scrolling at a desktop width.
        assert not seen["overflows"] and not seen["clipped"], str(seen)
    else:
        # A phone cannot show a dozen columns: the table scrolls in its own box, and the page
        # itself never gets wider than the screen.
        assert seen["scrolls"] or not seen["overflows"], seen
        assert not seen["pageOverflows"], seen
        # The filters come before the rows, where a person on a phone looks first.
        filters = page.locator("#changelist-filter").bounding_box()
        rows = page.locator("#result_list").bounding_box()
        assert filters and rows and filters["y"] < rows["y"], (filters, rows)
    # The error's first line is in the task list.
    if shot == "task-list":
        expect(
            page.locator("td.field-error_summary", has_text="invoice 1042").first
        ).to_be_visible()
    docs = os.environ.get("TASKS_HUB_DOCS_IMG")
    out = Path(docs) if docs and width >= 1400 else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    name = f"{shot}.png" if width >= 1400 else f"{shot}-{width}.png"
    page.screenshot(path=str(out / name), full_page=width >= 1400)
    print(f"screenshot: {out / name}")


@pytest.mark.parametrize("width", [1400, 390])
def test_task_page_run_history_and_traceback_scroll_in_their_box(
    page: Any, admin_user: Any, tmp_path: Path, width: int
) -> None:
    _rows()
    task = Task.objects.filter(status="failed").first()
    assert task is not None
    Task.objects.filter(pk=task.pk).update(
        traceback="Traceback (most recent call last):\n  File " + "x" * 400 + "\nValueError: wide"
    )
    page.set_viewport_size({"width": width, "height": 1000 if width > 1000 else 844})
    login(page, admin_user, next_url=f"/admin/django_tasks_hub/task/{task.pk}/change/")
    expect(page.locator(".th-traceback")).to_contain_text("ValueError: wide")
    seen = page.evaluate(
        """() => {
        const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
        const tb = document.querySelector('.th-traceback');
        const runs = document.querySelector('fieldset.th-runs');
        const right = el => el.getBoundingClientRect().right;
        return {
            tracebackScrolls: scrolls(tb) && tb.scrollWidth > tb.clientWidth,
            tracebackInView: right(tb) <= window.innerWidth + 1,
            runsInView: right(runs) <= window.innerWidth + 1,
            runsFit: runs.scrollWidth <= runs.clientWidth + 1 || scrolls(runs),
            pageOverflows: document.documentElement.scrollWidth > window.innerWidth + 1,
        };
    }"""
    )
    # The wide traceback scrolls inside its own box, which stays on the screen.
    assert seen["tracebackScrolls"] and seen["tracebackInView"], seen
    # The run history is never cut off mid-header: it fits or scrolls in its own box.
    assert seen["runsInView"] and seen["runsFit"], seen
    page.screenshot(path=str(tmp_path / f"task-page-{width}.png"), full_page=True)
