"""Restart and cancel through HTTP with real workers, a dead broker, and concurrent callers."""

from __future__ import annotations

import collections
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun
from testproject import tasks
from testproject.celery import app as celery_app
from testproject.reports import submit_report
from tests.api.conftest import DEAD_BROKER_PORT, client_for, dead_broker_app
from tests.conftest import task_row, wait_for, wait_status

#: Queues only the subprocess workers of these tests read (the in-process worker reads
#: ``celery``), so the task under test runs on the worker the test means.
CANCEL_QUEUE = "tasks-hub-api-cancel"
REVOKED_QUEUE = "tasks-hub-api-revoked"


@pytest.mark.worker
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/reports/tasks/{id}/restart/"), ("put", "/api/restart?task_id={id}")],
)
def test_restart_a_failed_task_and_it_succeeds_in_a_new_run(
    worker, operator, operator_client, tmp_path, method, path
):
    source = tmp_path / "rows.txt"
    report = submit_report(str(source), "pdf", user=operator)
    failed = wait_status(report.broker_id, "failed")
    assert "FileNotFoundError" in failed.error

    source.write_text("a\nb\nc\n")  # what the operator fixed before restarting
    response = getattr(operator_client, method)(path.format(id=report.pk))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "pending" and body["broker_id"] != report.broker_id

    done = wait_status(body["broker_id"], "done")
    assert done.pk == report.pk and done.result == {"format": "pdf", "lines": 3}
    runs = list(TaskRun.objects.filter(task_id=report.pk).order_by("id"))
    assert [(r.attempt, r.trigger, r.status) for r in runs] == [
        (1, "initial", "failed"),
        (2, "restart", "done"),
    ]
    assert runs[1].triggered_by_id == operator.pk and runs[1].broker_id == body["broker_id"]
    info = operator_client.get(f"/api/reports/info?task_id={report.pk}").json()
    assert info["status"] == "done" and info["report_format"] == "pdf"


@pytest.mark.worker
def test_cancel_a_running_task_and_the_worker_stops_it(
    subprocess_worker, operator, operator_client
):
    name = f"api-cancel-{uuid.uuid4().hex[:8]}@localhost"
    proc = subprocess_worker("--pool", "prefork", "-c", "2", "-Q", CANCEL_QUEUE, "-n", name)
    result = tasks.long_running.apply_async(
        kwargs={"steps": 240, "delay": 0.25}, queue=CANCEL_QUEUE
    )
    task = wait_status(result.id, "processing", timeout=60)
    pid = _pid_running(name, result.id)
    assert pid is not None and _alive(pid)

    response = operator_client.post(f"/api/tasks/{task.pk}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"

    # The worker got the revoke and killed the pool process running the task (it had a minute
    # left to run); the row says canceled either way, so the process is the witness.
    wait_for(lambda: f"Terminating {result.id}" in proc.output(), 30, 0.2, "the revoke")
    wait_for(lambda: not _alive(pid), 30, 0.1, f"pool process {pid} to end")
    assert _pid_running(name, result.id) is None
    task = task_row(result.id)
    assert task.status == "canceled"
    run = TaskRun.objects.get(broker_id=result.id)
    assert run.status == "canceled" and run.canceled_by_id == operator.pk
    assert run.started_at is not None and run.result is None


@pytest.mark.worker
def test_a_cancelled_queued_task_never_runs_on_a_worker_started_later(
    subprocess_worker, operator_client
):
    queued = tasks.add.apply_async((2, 3), queue=REVOKED_QUEUE)
    assert task_row(queued.id).status == "pending"
    response = operator_client.put(f"/api/cancel?task_id={queued.id}")
    assert response.status_code == 200, response.content

    proc = subprocess_worker("--pool", "prefork", "-c", "1", "-Q", REVOKED_QUEUE)
    # A task sent after it on the same queue runs: the worker did read that queue.
    later = tasks.add.apply_async((4, 5), queue=REVOKED_QUEUE)
    assert wait_status(later.id, "done").result == 9
    wait_for(
        lambda: f"Discarding revoked task: demo.add[{queued.id}]" in proc.output(),
        30,
        0.2,
        "the worker to discard the cancelled task",
    )
    task = task_row(queued.id)
    assert task.status == "canceled" and task.result is None and task.started_at is None
    assert TaskRun.objects.get(broker_id=queued.id).started_at is None


@pytest.mark.worker
def test_restart_with_the_broker_down_answers_503_and_leaves_nothing_pending(
    transactional_db, operator_client, make_task, api_queue
):
    assert dead_broker_app.connection_for_write().port == DEAD_BROKER_PORT
    task = make_task("failed")
    with override_settings(TASKS_HUB={"CELERY_APP": "tests.api.conftest.dead_broker_app"}):
        started = timezone.now()
        response = operator_client.post(f"/api/tasks/{task.pk}/restart/")
        elapsed = (timezone.now() - started).total_seconds()
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "broker_unavailable" and "broker" in body["detail"]
    assert response["Retry-After"]
    before_error = task.error
    task.refresh_from_db()
    # The task is as it was; the restart's run says why it never ran.
    assert task.status == "failed" and task.error == before_error
    # Nothing the restart made is left open: no run of the task, no task row of its own for
    # the broker id it tried (rows an earlier test's message writes now are not counted).
    assert not TaskRun.objects.filter(task=task).open().exists()
    newest = TaskRun.objects.filter(task=task).order_by("-id").first()
    assert newest is not None
    assert not Task.objects.filter(broker_id=newest.broker_id).exclude(pk=task.pk).exists()
    assert newest.trigger == "restart" and newest.status == "failed"
    assert "broker could not be reached" in newest.error
    # With the broker back, the same task restarts (so it was not left stuck).
    again = operator_client.post(f"/api/tasks/{task.pk}/restart/")
    assert again.status_code == 200 and again.json()["status"] == "pending"
    print(f"dead-broker restart answered 503 in {elapsed:.2f}s")


@pytest.mark.worker
def test_cancel_with_the_broker_down_answers_503_and_changes_nothing(
    transactional_db, operator_client, make_task
):
    task = make_task("pending")
    with override_settings(TASKS_HUB={"CELERY_APP": "tests.api.conftest.dead_broker_app"}):
        response = operator_client.put(f"/api/cancel?task_id={task.pk}")
    assert response.status_code == 503, response.content
    assert response.json()["status"] == "pending"
    task.refresh_from_db()
    assert task.status == "pending" and task.runs.get().status == "pending"


def _pid_running(worker_name: str, broker_id: str) -> int | None:
    """The pid of the pool process of ``worker_name`` running ``broker_id``, asked by inspect."""
    active = celery_app.control.inspect(timeout=5, destination=[worker_name]).active() or {}
    for job in active.get(worker_name, []):
        if job["id"] == broker_id:
            return int(job["worker_pid"])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until the worker reaps it: that is not alive either.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except FileNotFoundError:
        return False


def _concurrently(client: Client, method: str, path: str, n: int = 20) -> list[int]:
    barrier = threading.Barrier(n)

    def call(_: int) -> int:
        own = Client()
        own.cookies = client.cookies
        barrier.wait(timeout=30)
        try:
            return getattr(own, method)(path).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


@pytest.mark.postgres
def test_twenty_concurrent_restarts_make_one_run(transactional_db, operator, make_task, api_queue):
    task = make_task("done")  # sent to a queue no worker reads: it stays pending
    codes = _concurrently(client_for(operator), "post", f"/api/tasks/{task.pk}/restart/")
    assert collections.Counter(codes) == {200: 1, 409: 19}
    assert TaskRun.objects.filter(task=task).count() == 2
    task.refresh_from_db()
    assert task.status == "pending" and task.attempts == 2


@pytest.mark.postgres
def test_twenty_concurrent_cancels_cancel_once(transactional_db, operator, make_task):
    task = make_task("processing")
    codes = _concurrently(client_for(operator), "put", f"/api/cancel?task_id={task.pk}")
    assert collections.Counter(codes) == {200: 1, 409: 19}
    run = task.runs.get()
    assert run.status == "canceled" and run.canceled_by_id == operator.pk


def test_paging_1000_runs_while_runs_arrive_returns_each_old_run_once(
    transactional_db, reader_client, make_task
):
    tasks_ = [make_task("done") for _ in range(10)]
    now = timezone.now()
    TaskRun.objects.bulk_create(
        TaskRun(
            task=task,
            name=task.name,
            attempt=i + 2,
            broker_id=str(uuid.uuid4()),
            status="done",
            queued_at=now,
        )
        for task in tasks_
        for i in range(99)
    )
    # The runs of this test's tasks: a worker of an earlier test may still write a row of its
    # own (CI once saw 1,004 runs here); such a row may show on any page and proves nothing.
    old = set(TaskRun.objects.filter(task__in=tasks_).values_list("id", flat=True))
    assert len(old) == 1000

    inserted: list[int] = []
    stop = threading.Event()

    def insert() -> None:
        try:
            while not stop.is_set():
                run = TaskRun.objects.create(
                    task=tasks_[0], name="demo.add", broker_id=str(uuid.uuid4()), queued_at=now
                )
                inserted.append(run.pk)
                stop.wait(0.002)
        finally:
            connection.close()

    thread = threading.Thread(target=insert)
    thread.start()
    seen: list[int] = []
    try:
        url: Any = "/api/task-history/?limit=37"
        while url:
            before = len(inserted)
            page = reader_client.get(url).json()
            seen += [run["id"] for run in page["data"]]
            url = page["next"]
            # New runs arrive between every two pages.
            wait_for(lambda before=before: len(inserted) > before, 10, 0.001, "an insert")
    finally:
        stop.set()
        thread.join(30)
    counts = collections.Counter(seen)
    assert all(counts[run_id] == 1 for run_id in old), "an old run was repeated or skipped"
    assert set(seen) >= old and len(inserted) >= 27
    assert not set(seen) & set(inserted[1:]) - {max(seen)}, "a new run appeared after page one"
