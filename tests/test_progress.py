"""set_progress(): a running task reports how far it has come, and the task row shows it."""

from __future__ import annotations

from typing import Any

import pytest

from django_tasks_hub import set_progress
from django_tasks_hub.models import Task
from testproject import tasks
from tests.conftest import Lifecycle, task_row, wait_for, wait_status


@pytest.mark.worker
def test_progress_of_a_running_task_is_stored(worker: Any) -> None:
    result = tasks.long_running.delay(5, 0.3)

    def reported() -> Task | None:
        task = task_row(result.id)
        running = task is not None and task.status == "processing"
        return task if running and task.progress and task.progress["current"] >= 2 else None

    # Seen while the task still runs: the row moves along with it.
    running = wait_for(reported, what="progress while the task runs")
    current = running.progress["current"]
    assert running.progress == {
        "current": current,
        "total": 5,
        "message": f"step {current} of 5",
        "percent": round(100.0 * current / 5, 1),
    }
    done = wait_status(result.id, "done")
    assert done.result == 5
    assert done.progress == {"current": 5, "total": 5, "message": "step 5 of 5", "percent": 100.0}


@pytest.mark.usefixtures("eager")
def test_eager_task_progress_is_stored() -> None:
    result = tasks.long_running.delay(2, 0)
    task = Task.objects.get(pk=result.id)
    assert task.status == "done" and task.progress["current"] == 2


def test_progress_for_a_task_by_id_only_while_it_runs(db: Any) -> None:
    life = Lifecycle(tasks.long_running)
    life.publish()
    assert set_progress(1, 4, task_id=life.id) == {
        "current": 1,
        "total": 4,
        "message": "",
        "percent": 25.0,
    }
    assert Task.objects.get(pk=life.id).progress is None  # Not started: nothing to show.
    life.start()
    set_progress(3, 4, "almost", task_id=life.id)
    assert Task.objects.get(pk=life.id).progress["message"] == "almost"
    life.succeed(result=4)
    set_progress(1, 4, "late", task_id=life.id)  # After the end: ignored.
    task = Task.objects.get(pk=life.id)
    assert task.status == "done" and task.progress["message"] == "almost"


def test_progress_without_a_total(db: Any) -> None:
    life = Lifecycle(tasks.long_running)
    life.start()
    assert set_progress(7, message="rows", task_id=life.id) == {
        "current": 7,
        "total": None,
        "message": "rows",
    }
    assert Task.objects.get(pk=life.id).progress == {"current": 7, "total": None, "message": "rows"}


def test_progress_outside_a_task_needs_an_id() -> None:
    with pytest.raises(RuntimeError, match="outside a Celery task: pass task_id="):
        set_progress(1, 2)
    with pytest.raises(ValueError, match="total must not be negative"):
        set_progress(1, -2, task_id="x")
