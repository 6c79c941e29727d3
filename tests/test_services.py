"""services.restart() and services.cancel(): locks, refusals, the broker, real workers."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from celery.worker import state as worker_state
from django.db import transaction
from django.test import override_settings
from kombu import Queue

from django_tasks_hub import services
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)
from django_tasks_hub.models import Task, TaskRun
from testproject import tasks
from testproject.celery import app as celery_app
from testproject.models import ReportTask
from tests.api.conftest import dead_broker_app, make_user
from tests.conftest import purge_queue, wait_for, wait_status

QUEUE = "tasks-hub-services-tests"


def make_task(status: str, name: str = "demo.add", **fields: Any) -> Task:
    broker_id = str(uuid.uuid4())
    task = Task.objects.create(
        id=uuid.UUID(broker_id),
        name=name,
        args=[1, 2],
        status=status,
        broker_id=broker_id,
        attempts=1,
        options={"routing_key": QUEUE},
        **fields,
    )
    TaskRun.objects.create(task=task, name=name, broker_id=broker_id, status=status)
    return task


def queued(name: str = QUEUE) -> int:
    with celery_app.connection_for_write() as conn:
        return int(
            Queue(name).bind(conn.default_channel).queue_declare(passive=False).message_count
        )


@pytest.fixture
def services_queue() -> Any:
    yield QUEUE
    purge_queue(QUEUE)


@pytest.mark.parametrize("status", ["pending", "processing", "retrying"])
def test_restart_refuses_an_active_task(db, status):
    task = make_task(status)
    with pytest.raises(TaskNotRestartable) as caught:
        services.restart(task)
    assert caught.value.status == status and status in caught.value.message
    task.refresh_from_db()
    assert task.status == status and task.runs.count() == 1


@pytest.mark.parametrize("status", ["done", "failed", "canceled", "refused", "lost"])
def test_cancel_refuses_an_ended_task(db, status):
    task = make_task(status)
    with pytest.raises(TaskNotCancelable) as caught:
        services.cancel(task)
    assert caught.value.status == status


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "nope", "", None, 12])
def test_unknown_and_malformed_ids_are_task_not_found(db, task_id):
    with pytest.raises(TaskNotFound):
        services.restart(task_id)
    with pytest.raises(TaskNotFound):
        services.cancel(task_id)


def test_restart_refuses_an_unregistered_name(db):
    task = make_task("failed", name="no.longer.here")
    with pytest.raises(UnknownTaskName, match=r"no\.longer\.here"):
        services.restart(task.pk)
    with pytest.raises(UnknownTaskName):
        services.submit("no.longer.here")


def test_restart_inside_a_transaction_sends_after_commit(transactional_db, services_queue):
    user = make_user("alice")
    task = make_task("done")
    before = queued()
    with transaction.atomic():
        restarted = services.restart(task.pk, user)
        assert restarted.status == "pending"
        assert queued() == before, "sent before the run was committed"
    assert queued() == before + 1
    run = TaskRun.objects.get(broker_id=restarted.broker_id)
    assert run.trigger == "restart" and run.triggered_by_id == user.pk and run.attempt == 2


@pytest.mark.worker
def test_restart_with_a_real_worker_runs_a_new_attempt(worker):
    first = tasks.fail.delay("first")
    failed = wait_status(first.id, "failed")
    restarted = services.restart(failed)
    assert restarted.broker_id != first.id and restarted.attempts == 2
    again = wait_status(restarted.broker_id, "failed")
    assert again.pk == failed.pk and "first" in again.error
    runs = TaskRun.objects.filter(task=failed).order_by("attempt")
    assert [(r.attempt, r.trigger, r.status) for r in runs] == [
        (1, "initial", "failed"),
        (2, "restart", "failed"),
    ]


@pytest.mark.worker
def test_cancel_tells_running_workers_and_records_who(worker):
    user = make_user("bob")
    task = make_task("pending")
    canceled = services.cancel(task, user)
    assert canceled.status == "canceled" and canceled.error == "Canceled by bob."
    run = task.runs.get()
    assert run.status == "canceled" and run.canceled_by_id == user.pk
    # The in-process worker got the broadcast: the id is in Celery's revoked set.
    wait_for(lambda: task.broker_id in worker_state.revoked, 10, what="the revoke broadcast")


def test_dead_broker_restart_fails_the_run_and_leaves_the_task_as_it_was(transactional_db):
    task = make_task("done")
    Task.objects.filter(pk=task.pk).update(result=42, worker="celery@before")
    with pytest.raises(BrokerUnavailable) as caught:
        services.restart(task, worker=dead_broker_app.tasks["demo.add"])
    assert caught.value.status == "done"
    task.refresh_from_db()
    # The task still tells its last real run's outcome...
    assert (task.status, task.result, task.worker, task.error) == ("done", 42, "celery@before", "")
    # ...and the history tells of the restart that never reached the broker.
    restart_run = task.runs.get(trigger="restart")
    assert restart_run.status == "failed" and "broker could not be reached" in restart_run.error
    assert task.attempts == task.runs.count() == 2
    assert not TaskRun.objects.open().exists() and not Task.objects.active().exists()


def test_dead_broker_cancel_leaves_the_task_as_it_was(transactional_db):
    task = make_task("processing")
    with pytest.raises(BrokerUnavailable) as caught:
        services.cancel(task, worker=dead_broker_app.tasks["demo.add"])
    assert caught.value.status == "processing"
    task.refresh_from_db()
    assert task.status == "processing" and task.runs.get().status == "processing"


def test_tasks_built_on_task_keep_their_own_row(transactional_db, services_queue):
    task = make_task("failed", name="reports.build")
    ReportTask(task_ptr=task, report_format="html").save_base(raw=True, force_insert=True)
    report = ReportTask.objects.get(pk=task.pk)
    restarted = services.restart(report, model=ReportTask)
    assert isinstance(restarted, ReportTask) and restarted.status == "pending"
    canceled = services.cancel(restarted.pk, model=ReportTask)
    assert canceled.status == "canceled"
    fresh = ReportTask.objects.get(pk=task.pk)
    assert fresh.report_format == "html" and fresh.attempts == 2
    assert [r.status for r in TaskRun.objects.filter(task=task).order_by("id")] == [
        "failed",
        "canceled",
    ]


@pytest.mark.parametrize("operation", ["restart", "cancel"])
def test_a_broker_that_never_answers_is_unavailable_not_a_hang(transactional_db, operation):
    # A server that accepts connections and never answers: what a hung broker looks like.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = Celery("tasks-hub-silent-broker", set_as_current=False)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app.conf.broker_write_url = app.conf.broker_read_url = url
        task = make_task("failed" if operation == "restart" else "processing")
        with override_settings(TASKS_HUB={"BROKER_TIMEOUT": 0.5}):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                getattr(services, operation)(task, worker=app.tasks["demo.add"])
            print(f"{operation} gave up on a silent broker after {time.monotonic() - started:.2f}s")
    task.refresh_from_db()
    assert task.status == ("failed" if operation == "restart" else "processing")
