"""``manage.py tasks_hub``: list, show, restart, cancel, prune and reconcile, with exit codes."""

from __future__ import annotations

import datetime
import io
import json
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest
from celery import Celery
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from django_tasks_hub.management.commands.tasks_hub import (
    EXIT_BROKER,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
)
from django_tasks_hub.models import Task, TaskRun, Worker
from django_tasks_hub.states import RunTrigger, TaskStatus
from testproject import tasks
from tests.conftest import ROOT, SubprocessWorker, wait_status

NOBODY = "tasks-hub-nobody-listens"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks_hub", *args, stdout=out)
    return out.getvalue()


def make_task(
    status: str = TaskStatus.DONE,
    *,
    ended_days_ago: float = 0,
    runs: int = 1,
    name: str = "demo.add",
) -> Task:
    """A task with ``runs`` ended runs, the last one in ``status``, as the plugin writes them."""
    now = timezone.now()
    ended = now - datetime.timedelta(days=ended_days_ago)
    broker_id = str(uuid.uuid4())
    task = Task.objects.create(
        pk=uuid.UUID(broker_id),
        name=name,
        status=status,
        broker_id=broker_id,
        attempts=runs,
        created_at=ended - datetime.timedelta(minutes=runs),
        updated_at=ended,
        finished_at=ended if status not in ("pending", "processing", "retrying") else None,
    )
    for attempt in range(1, runs + 1):
        last = attempt == runs
        TaskRun.objects.create(
            task=task,
            name=name,
            attempt=attempt,
            broker_id=broker_id if last else str(uuid.uuid4()),
            trigger=RunTrigger.INITIAL if attempt == 1 else RunTrigger.RESTART,
            status=status if last else TaskStatus.FAILED,
            queued_at=ended - datetime.timedelta(minutes=runs - attempt + 1),
            started_at=ended - datetime.timedelta(minutes=runs - attempt + 1),
            finished_at=task.finished_at if last else ended - datetime.timedelta(minutes=1),
        )
    return task


# -- list and show ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_shows_newest_first_and_filters() -> None:
    done = make_task(TaskStatus.DONE, name="demo.add")
    failed = make_task(TaskStatus.FAILED, name="demo.fail")
    out = run("list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "ATTEMPTS", "UPDATED_AT", "WORKER"]
    assert str(failed.pk) in lines[1] and str(done.pk) in lines[2]
    only_done = run("list", "--status", "done")
    assert str(done.pk) in only_done and str(failed.pk) not in only_done
    by_name = [
        json.loads(line) for line in run("list", "--name", "demo.fail", "--json").splitlines()
    ]
    assert [row["id"] for row in by_name] == [str(failed.pk)]
    assert by_name[0]["status"] == "failed"


@pytest.mark.django_db
def test_list_empty_and_bad_limit() -> None:
    assert run("list") == "No tasks.\n"
    with pytest.raises(CommandError, match="--limit must be 1 or more"):
        run("list", "--limit", "0")


@pytest.mark.django_db
def test_show_by_task_id_or_any_run_broker_id() -> None:
    task = make_task(TaskStatus.DONE, runs=3)
    first_run = task.runs.order_by("id").first()
    assert first_run is not None
    for ident in (str(task.pk), first_run.broker_id):
        out = run("show", ident)
        assert f"id: {task.pk}" in out
        assert "runs: 3" in out
        assert out.count("  #") == 3
    data = json.loads(run("show", str(task.pk), "--json"))
    assert [r["attempt"] for r in data["runs"]] == [1, 2, 3]
    assert data["runs"][-1]["trigger"] == "restart"


@pytest.mark.django_db
def test_show_unknown_id_fails_with_exit_code_1() -> None:
    with pytest.raises(CommandError, match="No task with id or Celery id 'nope'") as err:
        run("show", "nope")
    assert err.value.returncode == EXIT_NOT_FOUND


def test_exit_codes_from_the_command_line(transactional_db: Any) -> None:
    """The real ``manage.py`` process: messages on stderr, exit codes as documented."""
    task = make_task(TaskStatus.PROCESSING)
    env = SubprocessWorker().env()

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "tasks_hub", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = manage("show", str(uuid.uuid4()))
    assert missing.returncode == EXIT_NOT_FOUND
    assert "No task with id" in missing.stderr
    refused = manage("restart", str(task.pk))
    assert refused.returncode == EXIT_REFUSED
    assert "only an ended task can be restarted" in refused.stderr
    usage = manage("frobnicate")
    assert usage.returncode == 2
    ok = manage("show", str(task.pk))
    assert ok.returncode == 0 and str(task.pk) in ok.stdout


# -- restart and cancel -------------------------------------------------------------------------


@pytest.mark.worker
def test_restart_sends_an_ended_task_again(worker: Any, django_user_model: Any) -> None:
    alice = django_user_model.objects.create_user("alice")
    result = tasks.add.delay(20, 22)
    task = wait_status(result.id, "done")
    out = run("restart", str(task.pk), "--user", "alice")
    assert f"Restarted task {task.pk}: now pending." in out
    task.refresh_from_db()
    wait_status(task.broker_id, "done")
    runs = list(task.runs.order_by("id"))
    assert [r.trigger for r in runs] == ["initial", "restart"]
    assert [r.status for r in runs] == ["done", "done"]
    assert runs[1].triggered_by_id == alice.pk


@pytest.mark.django_db(transaction=True)
def test_restart_refuses_an_active_task() -> None:
    result = tasks.add.apply_async((1, 2), queue=NOBODY)
    with pytest.raises(CommandError, match="only an ended task can be restarted") as err:
        run("restart", result.id)
    assert err.value.returncode == EXIT_REFUSED
    assert Task.objects.get(broker_id=result.id).status == TaskStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_cancel_then_cancel_again(django_user_model: Any) -> None:
    django_user_model.objects.create_user("bob")
    result = tasks.add.apply_async((1, 2), queue=NOBODY)
    out = run("cancel", result.id, "--user", "bob")
    assert "now canceled" in out
    task = Task.objects.get(broker_id=result.id)
    assert task.status == TaskStatus.CANCELED
    run_row = task.runs.get()
    assert run_row.status == TaskStatus.CANCELED and run_row.canceled_by is not None
    with pytest.raises(CommandError, match="only a pending, processing or retrying") as err:
        run("cancel", result.id)
    assert err.value.returncode == EXIT_REFUSED


@pytest.mark.django_db
def test_unknown_user_is_refused_before_anything_changes() -> None:
    task = make_task(TaskStatus.FAILED)
    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("restart", str(task.pk), "--user", "ghost")
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.runs.count() == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: A Celery app whose broker port is closed: nothing listens there. The project's shared tasks
#: (``demo.add``...) register on it too, so a restart finds them by name.
_DEAD_URL = f"redis://127.0.0.1:{_closed_port()}/0"
dead_app = Celery("dead-broker", broker=_DEAD_URL, set_as_current=False)
# The environment's CELERY_BROKER_URL would win over ``broker``; these two settings win over it.
dead_app.conf.broker_write_url = dead_app.conf.broker_read_url = _DEAD_URL
dead_app.conf.broker_connection_retry_on_startup = False
dead_app.conf.broker_connection_max_retries = 1


@pytest.mark.timeout(60)  # A publish that hangs instead of failing fails the test here.
@pytest.mark.django_db(transaction=True)
def test_restart_with_the_broker_gone_exits_4_and_leaves_nothing_pending() -> None:
    task = make_task(TaskStatus.DONE)
    with (
        override_settings(TASKS_HUB={"CELERY_APP": "tests.test_commands.dead_app"}),
        pytest.raises(CommandError, match="broker could not be reached") as err,
    ):
        run("restart", str(task.pk))
    assert err.value.returncode == EXIT_BROKER
    assert "Check that the broker is running" in str(err.value)
    task.refresh_from_db()
    # Nothing is left pending that the broker does not have.
    assert task.status not in (TaskStatus.PENDING, TaskStatus.PROCESSING)
    assert not task.runs.open().exists()


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_cancel_with_the_broker_gone_exits_4_and_leaves_the_task_as_it_was() -> None:
    task = make_task(TaskStatus.PENDING)
    with (
        override_settings(TASKS_HUB={"CELERY_APP": "tests.test_commands.dead_app"}),
        pytest.raises(CommandError, match="not canceled") as err,
    ):
        run("cancel", str(task.pk))
    assert err.value.returncode == EXIT_BROKER
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    assert task.runs.get().status == TaskStatus.PENDING


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_reconcile_with_the_broker_gone_exits_4() -> None:
    task = make_task(TaskStatus.PROCESSING)
    TaskRun.objects.filter(task=task).update(status=TaskStatus.PROCESSING, worker="w@x")
    with (
        override_settings(TASKS_HUB={"CELERY_APP": "tests.test_commands.dead_app"}),
        pytest.raises(CommandError, match="Could not ask the workers") as err,
    ):
        run("reconcile", "--grace", "0", "--timeout", "0.5")
    assert err.value.returncode == EXIT_BROKER
    assert TaskRun.objects.get(task=task).status == TaskStatus.PROCESSING


# -- prune --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_deletes_old_finished_tasks_and_old_runs_but_keeps_latest_runs() -> None:
    old_done = make_task(TaskStatus.DONE, ended_days_ago=40, runs=2)
    recent = make_task(TaskStatus.DONE, ended_days_ago=1, runs=1)
    # A task restarted recently whose earlier runs are old: those go, the latest stays.
    mixed = make_task(TaskStatus.DONE, ended_days_ago=40, runs=4)
    Task.objects.filter(pk=mixed.pk).update(finished_at=timezone.now())
    # An active task whose older runs ended long ago: the task stays, the old runs go.
    active = make_task(TaskStatus.FAILED, ended_days_ago=40, runs=3)
    Task.objects.filter(pk=active.pk).update(status=TaskStatus.RETRYING, finished_at=None)
    latest_active = active.runs.order_by("-id").first()
    assert latest_active is not None

    preview = run("prune", "--older-than", "30", "--dry-run")
    assert "Would delete 1 finished task(s) and 7 run(s)" in preview
    assert TaskRun.objects.count() == 10

    out = run("prune", "--older-than", "30", "--batch-size", "2")
    assert "Deleted 1 finished task(s) and 7 run(s)" in out
    assert not Task.objects.filter(pk=old_done.pk).exists()
    assert set(Task.objects.values_list("pk", flat=True)) == {recent.pk, mixed.pk, active.pk}
    assert mixed.runs.count() == 1 and mixed.runs.get().attempt == 4
    assert list(active.runs.values_list("pk", flat=True)) == [latest_active.pk]
    assert recent.runs.count() == 1
    assert "Deleted 0 finished task(s) and 0 run(s)" in run("prune", "--older-than", "30")


@pytest.mark.django_db
def test_prune_default_retention_is_a_setting() -> None:
    make_task(TaskStatus.DONE, ended_days_ago=10)
    assert "Deleted 0 finished task(s)" in run("prune")
    with override_settings(TASKS_HUB={"RETENTION_DAYS": 5}):
        assert "Deleted 1 finished task(s) and 1 run(s)" in run("prune")
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_prune_never_touches_open_runs() -> None:
    task = make_task(TaskStatus.PROCESSING, ended_days_ago=90, runs=2)
    run("prune", "--older-than", "0")
    assert Task.objects.filter(pk=task.pk).exists()
    assert list(task.runs.values_list("status", flat=True)) == [TaskStatus.PROCESSING]


@pytest.mark.django_db
def test_prune_rejects_bad_numbers() -> None:
    with pytest.raises(CommandError, match="older_than_days must be 0 or more"):
        run("prune", "--older-than", "-1")
    with pytest.raises(CommandError, match="batch_size must be 1 or more"):
        run("prune", "--batch-size", "-3")


# -- reconcile (without a worker; the reliability tests kill real ones) -------------------------


@pytest.mark.django_db(transaction=True)
def test_reconcile_marks_runs_of_a_worker_nobody_answers_for() -> None:
    task = make_task(TaskStatus.PROCESSING, ended_days_ago=0)
    TaskRun.objects.filter(task=task).update(worker="ghost@nowhere")
    dry = run("reconcile", "--grace", "0", "--timeout", "0.3", "--dry-run")
    assert "gone: ghost@nowhere" in dry and "Would mark 1 run(s) lost." in dry
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PROCESSING

    out = run("reconcile", "--grace", "0", "--timeout", "0.3")
    assert "Marked 1 run(s) lost." in out
    task.refresh_from_db()
    run_row = task.runs.get()
    assert task.status == run_row.status == TaskStatus.LOST
    assert "ghost@nowhere did not answer" in run_row.error
    assert task.finished_at is not None and run_row.finished_at is not None
    # A second pass finds nothing: lost is terminal.
    assert "Marked 0 run(s) lost." in run("reconcile", "--grace", "0", "--timeout", "0.3")


@pytest.mark.django_db(transaction=True)
def test_reconcile_leaves_runs_inside_the_grace_period() -> None:
    task = make_task(TaskStatus.PROCESSING)
    TaskRun.objects.filter(task=task).update(worker="ghost@nowhere", started_at=timezone.now())
    with override_settings(TASKS_HUB={"RECONCILE_GRACE_SECONDS": 600}):
        out = run("reconcile", "--timeout", "0.3")
    # No heartbeat row for the worker: the grace counts from the run's start.
    assert "Checked 1 processing run(s)" in out and "Marked 0 run(s) lost." in out
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PROCESSING


@pytest.mark.django_db(transaction=True)
def test_reconcile_counts_the_grace_from_the_workers_last_heartbeat() -> None:
    """A silent heartbeat marks the runs at once, however recent; a fresh one never, however
    old the run and whether or not the worker answers (a solo worker busy in a long task)."""
    now = timezone.now()
    busy = make_task(TaskStatus.PROCESSING)
    TaskRun.objects.filter(task=busy).update(
        worker="busy@host", started_at=now - datetime.timedelta(hours=2)
    )
    dead = make_task(TaskStatus.PROCESSING)
    TaskRun.objects.filter(task=dead).update(worker="dead@host", started_at=now)
    Worker.objects.create(hostname="busy@host", pool="solo", last_seen=now)
    Worker.objects.create(
        hostname="dead@host", pool="prefork", last_seen=now - datetime.timedelta(seconds=40)
    )
    out = run("reconcile", "--timeout", "0.3")
    assert "gone: dead@host." in out and "Marked 1 run(s) lost." in out
    assert Task.objects.get(pk=busy.pk).status == TaskStatus.PROCESSING
    lost = TaskRun.objects.get(task=dead)
    assert lost.status == TaskStatus.LOST and "last seen 40 s ago" in lost.error


@pytest.mark.django_db(transaction=True)
def test_reconcile_ends_the_acknowledged_messages_of_a_dead_worker_only() -> None:
    """A message the dead worker acknowledged never runs: lost. One it only reserved (or ran
    with acks_late) is not in its list: the broker delivers it again, so it stays pending."""
    acked, reserved = make_task(TaskStatus.PENDING), make_task(TaskStatus.PENDING)
    Worker.objects.create(
        hostname="dead@host",
        last_seen=timezone.now() - datetime.timedelta(minutes=5),
        acknowledged=[acked.broker_id],
    )
    out = run("reconcile", "--timeout", "0.3")
    assert "Marked 1 run(s) lost." in out
    acked.refresh_from_db()
    (run_row,) = acked.runs.all()
    assert acked.status == run_row.status == TaskStatus.LOST
    assert "acknowledged this message" in run_row.error
    assert Task.objects.get(pk=reserved.pk).status == TaskStatus.PENDING
    assert TaskRun.objects.get(task=reserved).status == TaskStatus.PENDING
    # Judged once.
    assert Worker.objects.get(hostname="dead@host").acknowledged == []
    assert "Marked 0 run(s) lost." in run("reconcile", "--timeout", "0.3")


@pytest.fixture
def silent_broker() -> Any:
    """A TCP port that accepts connections and never answers: a hung broker."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    app = Celery("silent-broker", set_as_current=False)
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
    app.conf.broker_connection_retry_on_startup = False
    yield app
    server.close()


#: Set by the fixture for ``override_settings`` to find by dotted path.
silent_app: Any = None


@pytest.mark.timeout(60)  # A restart that hangs on the silent broker fails the test here.
@pytest.mark.django_db(transaction=True)
def test_restart_with_a_silent_broker_gives_up_in_bounded_time(silent_broker: Any) -> None:
    global silent_app
    silent_app = silent_broker
    task = make_task(TaskStatus.DONE)
    settings = {"CELERY_APP": "tests.test_commands.silent_app", "BROKER_TIMEOUT": 1.0}
    with (
        override_settings(TASKS_HUB=settings),
        pytest.raises(CommandError, match="broker") as err,
    ):
        run("restart", str(task.pk))
    assert err.value.returncode == EXIT_BROKER
    task.refresh_from_db()
    assert task.status not in (TaskStatus.PENDING, TaskStatus.PROCESSING)
    assert not task.runs.open().exists()


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_reconcile_with_a_silent_broker_gives_up_in_bounded_time(silent_broker: Any) -> None:
    global silent_app
    silent_app = silent_broker
    task = make_task(TaskStatus.PROCESSING)
    TaskRun.objects.filter(task=task).update(worker="w@x")
    settings = {"CELERY_APP": "tests.test_commands.silent_app", "BROKER_TIMEOUT": 1.0}
    with (
        override_settings(TASKS_HUB=settings),
        pytest.raises(CommandError, match="Could not ask the workers") as err,
    ):
        run("reconcile", "--grace", "0", "--timeout", "0.5")
    assert err.value.returncode == EXIT_BROKER
    assert TaskRun.objects.get(task=task).status == TaskStatus.PROCESSING
