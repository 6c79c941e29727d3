"""set_progress(): how a running task reports how far it has come."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from django_tasks_hub.events import TaskEvent
from django_tasks_hub.plugins.base import registry


def set_progress(
    current: float,
    total: float | None = None,
    message: str = "",
    *,
    task_id: str | None = None,
) -> dict[str, Any]:
    """Record the progress of the running Celery task (or of ``task_id``) and return it.

    Call it from inside a task: ``set_progress(3, 10, "pages rendered")``. The value is stored
    on the task row (``Task.progress``) while the task is processing, and every plugin's
    ``on_progress`` hook sees it.
    """
    from celery import current_task

    request = current_task.request if current_task else None
    broker_id = task_id or (request.id if request is not None else None)
    own = request is not None and request.id == broker_id
    if not broker_id:
        raise RuntimeError("set_progress() is called outside a Celery task: pass task_id=.")
    if total is not None and total < 0:
        raise ValueError("set_progress(): total must not be negative.")
    progress: dict[str, Any] = {"current": current, "total": total, "message": message}
    if total:
        progress["percent"] = round(100.0 * current / total, 1)
    registry.emit(
        TaskEvent(
            kind="progress",
            broker_id=str(broker_id),
            name=(getattr(current_task, "name", "") or "") if own else "",
            timestamp=timezone.now(),
            # The attempt is known only for the running task itself.
            retries=int(request.retries or 0) if own and request is not None else None,
            progress=progress,
        )
    )
    return progress
