"""The demo of ``./dev demo``: its commands, against a real prefork worker, show every status."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from django_tasks_hub import services
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import TaskStatus
from tests.conftest import wait_for

QUEUE = "demo-test"


@pytest.mark.django_db
def test_demo_setup_creates_the_superuser_and_is_idempotent():
    out = StringIO()
    call_command("demo_setup", stdout=out)
    assert "username 'demo', password 'demo'" in out.getvalue()
    user = get_user_model().objects.get(username="demo")
    user.set_password("changed")
    user.save()

    out = StringIO()
    call_command("demo_setup", stdout=out)
    assert "already there" in out.getvalue()
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.is_staff and user.check_password("demo")
    assert get_user_model().objects.filter(username="demo").count() == 1


@pytest.mark.slow
@pytest.mark.worker
def test_demo_tasks_leave_a_task_in_every_status(subprocess_worker):
    # The worker of ./dev demo: prefork (so demo.crash can lose its pool process), on a queue of
    # its own so that the in-process worker of other tests never takes a demo task.
    worker = subprocess_worker("--concurrency", "4", "-Q", QUEUE, "-n", f"{QUEUE}@%h")
    call_command("demo_setup", stdout=StringIO())
    out = StringIO()
    call_command(
        "demo_tasks",
        addr="127.0.0.1:8765",
        queue=QUEUE,
        # Long enough that the processing and retrying tasks are still there on a slow machine.
        long_steps=1500,
        long_delay=0.2,
        retry_countdown=600,
        wait=60,
        stdout=out,
    )
    printed = out.getvalue()

    def statuses() -> set[str]:
        return set(Task.objects.values_list("status", flat=True))

    everything = set(TaskStatus.values)
    wait_for(lambda: statuses() == everything, timeout=60, what=f"every status in {everything}")

    long_task = Task.objects.filter(name="demo.long", status=TaskStatus.PROCESSING).get()
    wait_for(
        lambda: (Task.objects.get(pk=long_task.pk).progress or {}).get("current", 0) >= 2,
        what="the long task's progress to move",
    )
    assert Task.objects.get(name="demo.no_such_task").status == TaskStatus.REFUSED
    assert Task.objects.get(name="demo.crash").status == TaskStatus.LOST
    restarted = Task.objects.get(name="demo.fail")
    assert TaskRun.objects.filter(task=restarted, trigger="restart").exists()
    canceled = Task.objects.filter(status=TaskStatus.CANCELED)
    assert canceled.count() == 2
    assert all(t.error == "Canceled by demo." for t in canceled)
    assert Task.objects.filter(parent__isnull=False, name="demo.add").exists()

    # The summary is printed once the lost task is recorded.
    assert "lost 1" in printed and "refused 1" in printed
    for where in (
        "http://127.0.0.1:8765/admin/django_tasks_hub/task/",
        "http://127.0.0.1:8765/api/list",
        "http://127.0.0.1:8765/api/docs/",
    ):
        assert where in printed

    # The long task would hold the worker's warm shutdown for a minute: end it the demo's way.
    services.cancel(long_task)
    assert worker.proc is not None and worker.proc.poll() is None
