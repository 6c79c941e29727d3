"""The report-building Celery task and ``submit_report()``, which records a ReportTask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from django_tasks_hub import services


@shared_task(name="reports.build")
def build_report(source: str, report_format: str = "csv") -> dict[str, Any]:
    """Build a report from the lines of ``source``; fails while the file is missing."""
    lines = Path(source).read_text().splitlines()
    return {"format": report_format, "lines": len(lines)}


def submit_report(source: str, report_format: str = "csv", *, user: Any = None) -> Any:
    """Send ``build_report`` and return its ReportTask.

    The recorder writes the ``Task`` row when the message is published; this adds the
    report's own row next to it (``save_base(raw=True)`` writes the child table only, so the
    status the worker may already have written is not overwritten).
    """
    from testproject.models import ReportTask

    task = services.submit(build_report, args=[source, report_format], user=user)
    if task is None:
        raise RuntimeError("reports.build was not recorded; is the tasks-hub plugin enabled?")
    report = ReportTask(task_ptr=task, report_format=report_format)
    report.save_base(raw=True, force_insert=True)
    return ReportTask.objects.get(pk=task.pk)
