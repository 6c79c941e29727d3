"""The shortest end-to-end path: publish, a real worker runs it, the rows say so."""

import pytest

from django_tasks_hub.models import Task, TaskRun
from testproject import tasks
from tests.conftest import wait_status


@pytest.mark.worker
def test_success_is_recorded(worker):
    result = tasks.add.delay(2, 3)
    task = wait_status(result.id, "done")
    assert task.result == 5
    run = TaskRun.objects.get(task=task)
    assert run.status == "done" and run.worker and run.runtime is not None
    assert run.queued_at <= run.started_at <= run.finished_at
    assert Task.objects.count() == 1
