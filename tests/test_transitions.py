"""The transition rule has one home: a status written from anywhere else is caught."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection

from django_tasks_hub import transitions
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import TaskStatus
from django_tasks_hub.transitions import TaskMove
from testproject import status_writers


def make_task(name: str, status: str) -> Task:
    task = Task.objects.create(name=name, status=status, broker_id=str(uuid.uuid4()))
    TaskRun.objects.create(task=task, name=name, broker_id=task.broker_id, status=status)
    return task


def rogue(source: str) -> Any:
    """A function defined as if it were a module of the package (``django_tasks_hub/rogue.py``)."""
    namespace: dict[str, Any] = {}
    path = status_writers.PACKAGE / "rogue.py"
    exec(compile(source, str(path), "exec"), namespace)
    return namespace["write"]


def test_a_status_written_outside_the_rule_is_caught(db: Any) -> None:
    task = make_task("reports.build", "pending")
    table = Task._meta.db_table
    writers = {
        "queryset update": rogue("def write(qs, pk):\n    qs.filter(pk=pk).update(status='done')"),
        "model save": rogue(
            "def write(qs, pk):\n    t = qs.get(pk=pk)\n    t.status = 'done'\n"
            "    t.save(update_fields=['status'])"
        ),
        "raw SQL": rogue(
            "from django.db import connection\n"
            "def write(qs, pk):\n"
            "    with connection.cursor() as c:\n"
            f"        c.execute(\"UPDATE {table} SET updated_at = updated_at, status = 'done' "
            "WHERE id = %s\", [pk.hex if connection.vendor == 'sqlite' else pk])"
        ),
    }
    for how, write in writers.items():
        with status_writers.captured() as found:
            write(Task.objects.all(), task.pk)
        assert [(f, fn) for f, _, fn, _ in found] == [("django_tasks_hub/rogue.py", "write")], how
        status_writers.found.clear()  # Caught on purpose: not a finding of the run.


def test_the_rule_itself_is_not_caught(db: Any) -> None:
    task = make_task("reports.build", "pending")
    with status_writers.captured() as found:
        moved = transitions.move_tasks(
            Task.objects.filter(pk=task.pk), TaskMove(TaskStatus.PROCESSING, 0)
        )
    assert moved == 1 and found == []
    assert connection.vendor in ("sqlite", "postgresql")


def test_moves_follow_the_precedence_order(db: Any) -> None:
    task = make_task("reports.build", "done")
    tasks = Task.objects.filter(pk=task.pk)
    # A late start or failure never takes a finished task back.
    assert transitions.move_tasks(tasks, TaskMove(TaskStatus.PROCESSING, 0)) == 0
    assert transitions.move_tasks(tasks, TaskMove(TaskStatus.FAILED, 0)) == 0
    # A cancel beats everything.
    assert transitions.move_tasks(tasks, TaskMove(TaskStatus.CANCELED, 0)) == 1
    runs = TaskRun.objects.filter(task=task)
    assert transitions.move_runs(runs, TaskStatus.PROCESSING) == 0
    assert transitions.move_runs(runs, TaskStatus.CANCELED) == 1
