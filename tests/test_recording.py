"""End to end: a real worker runs real tasks from the real broker, and the rows say what happened.

Every test publishes the way an application does and asserts the rows a person would look at:
status, attempts, timestamps in order, result, error, traceback and worker.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, group, signals
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from django_tasks_hub import flush, receivers
from django_tasks_hub.models import Task, TaskRun
from testproject import tasks
from testproject.celery import app as celery_app
from tests.conftest import wait_for, wait_status

pytestmark = pytest.mark.worker


def runs_of(task: Task) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task=task).order_by("id"))


@pytest.fixture
def succeeded() -> Iterator[set[str]]:
    """Ids of the tasks Celery itself reports as succeeded (its own ``task_success`` signal)."""
    ids: set[str] = set()

    def on_success(sender: Any = None, **_: Any) -> None:
        ids.add(sender.request.id)

    signals.task_success.connect(on_success, weak=False)
    yield ids
    signals.task_success.disconnect(on_success)


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("write_mode")
def test_success_records_result_runtime_and_worker(worker: Any) -> None:
    before = timezone.now()
    result = tasks.add.delay(2, 3)
    task = wait_status(result.id, "done")
    assert str(task.pk) == result.id and task.name == "demo.add"
    assert (task.result, task.error, task.traceback) == (5, "", "")
    assert (task.args, task.kwargs, task.attempts, task.retries) == ([2, 3], {}, 1, 0)
    assert task.worker == worker.hostname and task.options["routing_key"] == "celery"
    assert before <= task.created_at <= task.started_at <= task.finished_at
    (run,) = runs_of(task)
    assert (run.status, run.trigger, run.attempt, run.result) == ("done", "initial", 1, 5)
    assert run.worker == worker.hostname and run.broker_id == result.id
    assert task.created_at == run.queued_at <= run.started_at <= run.finished_at
    assert run.runtime is not None and run.runtime >= 0
    assert (task.started_at, task.finished_at) == (run.started_at, run.finished_at)


@pytest.mark.usefixtures("write_mode")
def test_failure_records_the_exception_and_traceback(worker: Any) -> None:
    result = tasks.fail.delay("the disk is full")
    task = wait_status(result.id, "failed")
    assert task.error == "ValueError: the disk is full" and task.result is None
    assert "Traceback" in task.traceback and "raise ValueError(message)" in task.traceback
    assert task.started_at <= task.finished_at and task.worker == worker.hostname
    (run,) = runs_of(task)
    assert (run.status, run.error, run.traceback) == ("failed", task.error, task.traceback)
    assert run.queued_at <= run.started_at <= run.finished_at and run.runtime is not None


@pytest.mark.usefixtures("write_mode")
def test_retry_shows_retrying_between_attempts_then_the_outcome(worker: Any) -> None:
    # A long countdown keeps the task between its attempts long enough to look at it.
    result = tasks.flaky.apply_async(kwargs={"fail_times": 1, "countdown": 1.5})
    waiting = wait_status(result.id, "retrying")
    assert (waiting.retries, waiting.attempts) == (1, 2)
    first, second = wait_for(
        lambda: (runs := runs_of(waiting))[0].error and runs, what="the retry to be recorded"
    )
    assert (first.status, first.trigger, first.attempt) == ("retrying", "initial", 1)
    assert first.error == "RuntimeError: attempt 0 failed" and "Retry" in first.traceback
    assert (second.status, second.trigger, second.attempt) == ("pending", "retry", 2)
    assert Task.objects.get(pk=result.id).error == first.error  # Why it is retrying.

    task = wait_status(result.id, "done")
    assert (task.result, task.error, task.retries, task.attempts) == (
        "succeeded after 1 retries",
        "",
        1,
        2,
    )
    first, second = runs_of(task)
    assert [r.status for r in (first, second)] == ["retrying", "done"]
    assert first.started_at <= second.queued_at <= second.started_at <= second.finished_at
    assert first.finished_at <= second.started_at  # The countdown held the second attempt.
    assert task.started_at == second.started_at and task.finished_at == second.finished_at
    assert second.worker == worker.hostname and second.result == task.result


@pytest.mark.usefixtures("write_mode")
def test_retries_exhausted_end_failed(worker: Any) -> None:
    result = tasks.always_retry.delay()
    task = wait_status(result.id, "failed")
    runs = runs_of(task)
    assert [(r.attempt, r.retries, r.trigger, r.status) for r in runs] == [
        (1, 0, "initial", "retrying"),
        (2, 1, "retry", "retrying"),
        (3, 2, "retry", "failed"),
    ]
    assert task.attempts == 3 and task.retries == 2
    assert task.error == "RuntimeError: still broken" == runs[-1].error
    assert "RuntimeError" in task.traceback
    for before, after in itertools.pairwise(runs):
        assert before.started_at <= after.queued_at <= after.started_at


@pytest.mark.usefixtures("write_mode")
def test_revoked_before_it_runs_is_canceled(worker: Any) -> None:
    result = tasks.add.apply_async((1, 1), countdown=3)
    assert wait_status(result.id, "pending")
    celery_app.control.revoke(result.id)
    task = wait_status(result.id, "canceled")
    (run,) = runs_of(task)
    assert run.status == "canceled" and run.started_at is None and task.started_at is None
    assert run.error == "Revoked before it ran." == task.error
    assert run.worker == worker.hostname and run.queued_at <= run.finished_at
    assert task.result is None and task.finished_at == run.finished_at


@pytest.mark.usefixtures("write_mode")
def test_unregistered_task_name_is_refused(worker: Any) -> None:
    result = celery_app.send_task("no.such.task", args=(1,))
    task = wait_status(result.id, "refused")
    assert task.name == "no.such.task" and task.args == [1]
    assert task.error == "Task 'no.such.task' is not registered on the worker."
    (run,) = runs_of(task)
    assert run.status == "refused" and run.worker == worker.hostname
    assert run.started_at is None and run.queued_at <= run.finished_at


@pytest.mark.usefixtures("write_mode")
def test_invalid_message_is_refused(worker: Any) -> None:
    # The worker cannot read the ETA, so it rejects the message (Celery's ``task_rejected``).
    result = celery_app.send_task("demo.add", args=(1, 2), headers={"eta": "next tuesday"})
    task = wait_status(result.id, "refused")
    assert task.error.startswith("Rejected by the worker: InvalidTaskError")
    assert "next tuesday" in task.error
    (run,) = runs_of(task)
    assert run.status == "refused" and run.started_at is None


@pytest.mark.usefixtures("write_mode")
def test_chains_and_groups_record_their_parent(worker: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    chain(
        tasks.add.s(1, 1).set(task_id=ids[0]),
        tasks.add.s(2).set(task_id=ids[1]),
        group(tasks.add.s(10).set(task_id=ids[2]), tasks.add.s(20).set(task_id=ids[3])),
    ).apply_async()
    first, second, left, right = (wait_status(i, "done") for i in ids[:4])
    assert first.parent_id is None and first.result == 2
    assert second.parent_id == first.pk and second.result == 4
    # The group is published by the step before it, so both members name it.
    assert (left.parent_id, left.result) == (second.pk, 14)
    assert (right.parent_id, right.result) == (second.pk, 24)
    assert list(Task.objects.get(pk=second.pk).children.order_by("result")) == [left, right]


@pytest.mark.usefixtures("write_mode")
def test_values_json_cannot_hold_as_they_are_are_still_recorded(worker: Any) -> None:
    # Celery's JSON serializer carries datetimes, decimals and UUIDs; the rows store them as
    # Django's encoder writes them. NaN and NUL characters, which PostgreSQL refuses, as text;
    # in a list, only the item that needs it.
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    payload = {"when": when, "amount": decimal.Decimal("1.50"), "id": uuid.UUID(int=1)}
    stored = {"when": "2026-01-02T03:04:05Z", "amount": "1.50", "id": str(uuid.UUID(int=1))}
    rich = wait_status(tasks.echo.delay(payload).id, "done")
    assert (rich.args, rich.result) == ([stored], stored)
    nan = wait_status(tasks.echo.delay(float("nan")).id, "done")
    assert (nan.args, nan.result) == (["nan"], "nan")
    nul = wait_status(tasks.echo.delay("a\x00b").id, "done")
    assert (nul.args, nul.result) == (["a\\x00b"], "a\\x00b")
    assert runs_of(nul)[0].result == "a\\x00b"


@pytest.mark.usefixtures("write_mode")
def test_the_same_message_published_twice_is_one_task(worker: Any) -> None:
    task_id = str(uuid.uuid4())
    ran: list[str] = []

    def on_postrun(task_id: str | None = None, **_: Any) -> None:
        ran.append(str(task_id))

    # Both copies run; the second one's events may come after the first one's row is done,
    # and must not be written while the next test's teardown empties the tables.
    signals.task_postrun.connect(on_postrun, weak=False)
    try:
        tasks.add.apply_async((3, 4), task_id=task_id)
        tasks.add.apply_async((3, 4), task_id=task_id)
        wait_for(lambda: ran.count(task_id) == 2, what="the worker to run both copies")
    finally:
        signals.task_postrun.disconnect(on_postrun)
    flush()
    task = wait_status(task_id, "done")
    assert Task.objects.filter(broker_id=task_id).count() == 1 and task.result == 7
    # Usually one run. Redis may hand the second copy out flagged as redelivered while the
    # first runs; it then counts as a new delivery of the attempt (see test_reliability).

    def ended() -> list[TaskRun] | None:
        runs = runs_of(task)
        return None if any(r.status in ("pending", "processing") for r in runs) else runs

    runs = wait_for(ended, what="both copies to end")
    assert [r.status for r in runs if r.status == "done"] == ["done"]
    assert Task.objects.get(pk=task.pk).attempts == len(runs)


def test_a_prefork_worker_process_records_the_same(subprocess_worker: Any) -> None:
    """``celery worker`` as deployed: its own process, tasks run in forked pool children."""
    queue = f"core-{uuid.uuid4().hex[:8]}"
    subprocess_worker("-Q", queue, "-n", f"{queue}@%h", "-P", "prefork", "-c", "2")
    done = tasks.add.apply_async((20, 22), queue=queue)
    failed = tasks.fail.apply_async(("no luck",), queue=queue)
    retried = tasks.flaky.apply_async(kwargs={"fail_times": 1, "countdown": 0.1}, queue=queue)
    task = wait_status(done.id, "done", timeout=60)
    assert task.result == 42 and task.worker.startswith(f"{queue}@")
    assert wait_status(failed.id, "failed").error == "ValueError: no luck"
    task = wait_status(retried.id, "done")
    runs = runs_of(task)
    assert [(r.status, r.trigger) for r in runs] == [("retrying", "initial"), ("done", "retry")]
    assert all(r.worker.startswith(f"{queue}@") and r.runtime is not None for r in runs)
    assert runs[0].started_at <= runs[1].queued_at <= runs[1].started_at


@pytest.mark.usefixtures("write_mode")
def test_who_submitted_and_who_restarted(worker: Any, django_user_model: Any) -> None:
    from django_tasks_hub import services

    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    task = services.submit(tasks.add, (1, 2), user=alice)
    assert task is not None and task.created_by == alice
    task = wait_status(str(task.pk), "done")
    services.restart(task, user=bob)
    restarted = wait_for(
        lambda: (t := Task.objects.get(pk=task.pk)).status == "done" and t.attempts == 2 and t,
        what="the restart to run",
    )
    assert restarted.created_by == alice and restarted.broker_id != str(task.pk)
    first, second = runs_of(restarted)
    assert (first.trigger, first.triggered_by, first.attempt) == ("initial", alice, 1)
    assert (second.trigger, second.triggered_by, second.attempt) == ("restart", bob, 2)
    assert second.status == "done" and second.result == 3
    assert restarted.created_at == first.queued_at < second.queued_at <= second.started_at


# -- published by a process that wrote no row -------------------------------------------------


@pytest.mark.usefixtures("write_mode")
def test_recorded_when_the_publisher_did_not_record_it(worker: Any, succeeded: set[str]) -> None:
    signals.before_task_publish.disconnect(dispatch_uid="tasks_hub.on_before_task_publish")
    try:
        result = tasks.add.delay(4, 4)
        assert not Task.objects.filter(broker_id=result.id).exists()
    finally:
        receivers.connect()
    task = wait_status(result.id, "done")
    assert task.result == 8 and task.args == [4, 4] and task.attempts == 1
    (run,) = runs_of(task)
    assert run.queued_at <= run.started_at <= run.finished_at and run.worker == worker.hostname


@pytest.mark.usefixtures("write_mode")
def test_recorded_when_published_by_a_process_without_django(worker: Any) -> None:
    # Another service: plain Celery, no Django, no tasks module, publishing by name.
    script = (
        "import json, os, sys\n"
        "from celery import Celery\n"
        "app = Celery(broker=os.environ['BROKER'])\n"
        "app.conf.broker_transport_options = json.loads(os.environ['OPTIONS'])\n"
        "print(app.send_task('demo.add', args=(20, 22)).id)\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    env["BROKER"] = settings.CELERY_BROKER_URL
    env["OPTIONS"] = json.dumps(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd="/", capture_output=True, check=True, text=True
    )
    task = wait_status(out.stdout.strip(), "done")
    assert task.result == 42 and task.name == "demo.add" and task.args == [20, 22]
    assert task.options == {}  # Only the publisher knows them.


def test_recorded_when_the_publishing_transaction_rolled_back(worker: Any) -> None:
    with transaction.atomic():
        result = tasks.add.delay(5, 6)
        # Written inside the transaction, like everything else the request did...
        assert Task.objects.filter(broker_id=result.id).exists()
        transaction.set_rollback(True)
    # ...and gone with it, but the message was sent: the worker's events record it.
    task = wait_status(result.id, "done")
    assert task.result == 11 and len(runs_of(task)) == 1


# -- eager mode --------------------------------------------------------------------------------


@pytest.mark.usefixtures("eager")
def test_eager_success_failure_and_retries_are_recorded() -> None:
    done = Task.objects.get(pk=tasks.add.delay(1, 2).id)
    assert (done.status, done.result, done.attempts) == ("done", 3, 1)
    (run,) = runs_of(done)
    assert run.status == "done" and run.worker and run.queued_at <= run.started_at

    failed = Task.objects.get(pk=tasks.fail.delay("eager boom").id)
    assert failed.status == "failed" and failed.error == "ValueError: eager boom"
    assert "Traceback" in failed.traceback

    retried = Task.objects.get(pk=tasks.flaky.delay(fail_times=2, countdown=0).id)
    assert (retried.status, retried.attempts, retried.retries) == ("done", 3, 2)
    assert [(r.status, r.trigger) for r in runs_of(retried)] == [
        ("retrying", "initial"),
        ("retrying", "retry"),
        ("done", "retry"),
    ]

    exhausted = Task.objects.get(pk=tasks.always_retry.delay().id)
    assert (exhausted.status, exhausted.attempts) == ("failed", 3)
    assert [r.status for r in runs_of(exhausted)] == ["retrying", "retrying", "failed"]


# -- not recorded ------------------------------------------------------------------------------


@pytest.mark.usefixtures("write_mode")
def test_skip_db_tag_writes_no_row(worker: Any, succeeded: set[str]) -> None:
    result = tasks.skipped.delay()
    wait_for(lambda: result.id in succeeded, what="demo.skipped to run")
    assert not Task.objects.filter(broker_id=result.id).exists()
    assert not TaskRun.objects.filter(broker_id=result.id).exists()
    assert tasks.skipped.apply().get() == "not recorded"
    assert not Task.objects.filter(name="demo.skipped").exists()


#: The Celery app of a process that publishes by name and does not have the task's code.
web_app = Celery("web-process", set_as_current=False)
web_app.tasks.unregister("demo.skipped")


def test_skip_db_task_published_by_name_leaves_no_row(worker: Any, succeeded: set[str]) -> None:
    with override_settings(TASKS_HUB={"CELERY_APP": "tests.test_recording.web_app"}):
        result = celery_app.send_task("demo.skipped")
        # The publisher cannot see the tag, so it recorded the task...
        assert Task.objects.filter(broker_id=result.id).exists()
        wait_for(lambda: result.id in succeeded, what="demo.skipped to run")
    # ...and the worker, which sees it, removed the rows before running it.
    assert not Task.objects.filter(broker_id=result.id).exists()
    assert not TaskRun.objects.filter(broker_id=result.id).exists()


# -- a database error in a receiver ------------------------------------------------------------


def test_database_error_in_a_receiver_is_logged_and_the_write_retried(
    worker: Any, succeeded: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    table = Task._meta.db_table
    with override_settings(TASKS_HUB={"WRITE_RETRY_DELAY": 0.3, "WRITE_RETRIES": 5}):
        # The task table is gone for a moment: every write of the publisher and the worker
        # fails for real.
        with connection.schema_editor() as editor:
            editor.alter_db_table(Task, table, f"{table}_away")
        try:
            result = tasks.add.delay(20, 22)
            wait_for(lambda: result.id in succeeded, what="the task to run")
        finally:
            with connection.schema_editor() as editor:
                editor.alter_db_table(Task, f"{table}_away", table)
        # The task ran and the worker did not notice; the writes are tried again and land.
        task = wait_status(result.id, "done")
    assert task.result == 42 and task.worker == worker.hostname and task.attempts == 1
    (run,) = runs_of(task)
    assert run.queued_at <= run.started_at <= run.finished_at
    for kind in ("queued", "started", "succeeded"):
        assert f"tasks-hub could not record {kind} of demo.add[{result.id}]" in caplog.text
    assert wait_status(tasks.add.delay(1, 1).id, "done").result == 2


def test_closed_connection_under_a_receiver_does_not_fail_the_task(
    worker: Any, succeeded: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    result = close_connection.delay()
    wait_for(lambda: result.id in succeeded, what="the task to succeed")
    # Its success could not be written on the closed connection: written again, later.
    task = wait_status(result.id, "done")
    assert task.result == "closed" and runs_of(task)[0].status == "done"
    assert "tasks-hub could not record succeeded of tests.close_connection" in caplog.text
    # The worker's threads carry on with new connections.
    assert wait_status(tasks.add.delay(1, 1).id, "done").result == 2


@celery_app.task(name="tests.close_connection")
def close_connection() -> str:
    """Closes the database connection under Django's feet, as a server restart would."""
    connection.ensure_connection()
    assert connection.connection is not None
    connection.connection.close()
    return "closed"
