"""Fixtures of the insight tests: task and run rows written as the recorder leaves them."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun


@pytest.fixture
def make_run(db: Any) -> Callable[..., TaskRun]:
    """A task and its run, inserted pending, then moved to ``status`` as events would."""

    def make(
        name: str = "demo.add",
        status: str = "done",
        *,
        runtime: float | None = 0.2,
        wait: float | None = 1.5,
        finished: datetime.datetime | None = None,
        error: str = "",
    ) -> TaskRun:
        finished = finished or timezone.now()
        started = finished - datetime.timedelta(seconds=runtime or 0)
        queued = started - datetime.timedelta(seconds=wait or 0)
        broker_id = str(uuid.uuid4())
        task = Task.objects.create(name=name, broker_id=broker_id, created_at=queued)
        run = TaskRun.objects.create(task=task, name=name, broker_id=broker_id, queued_at=queued)
        if status == "pending":
            return run
        # Moved by UPDATEs, as the recorder moves them: the triggers see each change.
        Task.objects.filter(pk=task.pk).update(status="processing", started_at=started)
        TaskRun.objects.filter(pk=run.pk).update(
            status="processing", started_at=started if wait is not None else None
        )
        if status != "processing":
            Task.objects.filter(pk=task.pk).update(status=status, finished_at=finished)
            TaskRun.objects.filter(pk=run.pk).update(
                status=status, finished_at=finished, runtime=runtime, error=error
            )
        run.refresh_from_db()
        return run

    return make
