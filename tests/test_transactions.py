"""Transaction mistakes: started before the commit, sent from a rollback, and the right way."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from django_tasks_hub import flush
from django_tasks_hub.models import (
    WARNING_ROLLED_BACK,
    WARNING_STARTED_BEFORE_COMMIT,
    Task,
    TaskRun,
    TaskTransaction,
)
from django_tasks_hub.recorder.background import background
from testproject import tasks
from testproject.models import Order
from tests.conftest import wait_for, wait_status

pytestmark = pytest.mark.worker


@pytest.fixture
def write_behind(settings):
    # The hub's own rows never join the caller's transaction: what it shows is the caller's.
    settings.TASKS_HUB = {**settings.TASKS_HUB, "WRITE_BEHIND": True}


def codes(broker_id: str) -> tuple[list[str], list[str]]:
    """The warning codes of the task and of its run, read as the API reads them."""
    flush(timeout=10)
    background.flush(timeout=10)
    task = Task.objects.with_transaction().get(broker_id=broker_id)
    run = TaskRun.objects.with_transaction().filter(broker_id=broker_id).order_by("-id").first()
    return [w["code"] for w in task.warnings], [w["code"] for w in run.warnings]


def api_warnings(task_id: str) -> list[dict]:
    client = Client()
    client.force_login(User.objects.get_or_create(username="reader")[0])
    body = client.get(f"/api/tasks/{task_id}/").json()
    runs = client.get("/api/task-history/", {"task_id": task_id}).json()
    assert runs["data"][0]["warnings"] == body["warnings"]
    return body["warnings"]


@pytest.mark.postgres
def test_a_worker_that_starts_before_the_commit_is_flagged(worker, write_behind):
    # PostgreSQL only: the test project's SQLite takes its write lock at BEGIN (IMMEDIATE), so
    # no worker can write a start there until the publisher's transaction ends.
    name = uuid.uuid4().hex
    with transaction.atomic():
        Order.objects.create(number=f"T-{name[:8]}")
        result = tasks.count_orders.delay(name)
        assert tasks.gate(name).wait(20), "the worker never started the task"
    task = wait_status(result.id, "done")
    assert task.result == 0  # It ran before the order it was sent for existed.
    assert codes(result.id) == ([WARNING_STARTED_BEFORE_COMMIT], [WARNING_STARTED_BEFORE_COMMIT])
    row = TaskTransaction.objects.get(broker_id=result.id)
    assert (row.alias, row.outcome, row.started_before_commit) == ("default", "committed", True)
    assert row.first_started_at is not None and row.ended_at is not None
    [warning] = api_warnings(result.id)
    assert warning["code"] == WARNING_STARTED_BEFORE_COMMIT
    assert "delay_on_commit()" in warning["message"]


@pytest.mark.parametrize("behind", [False, True], ids=["in-signal", "write-behind"])
def test_a_task_sent_from_a_rolled_back_transaction_is_flagged(worker, settings, behind):
    settings.TASKS_HUB = {**settings.TASKS_HUB, "WRITE_BEHIND": behind}
    name = uuid.uuid4().hex
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.count_orders.delay(name)
        raise RuntimeError("the view failed after sending the task")
    wait_status(result.id, "done")
    wait_for(
        lambda: TaskTransaction.objects.filter(broker_id=result.id, outcome="rolled_back").exists(),
        what="the rollback to be recorded",
    )
    assert codes(result.id) == ([WARNING_ROLLED_BACK], [WARNING_ROLLED_BACK])
    assert [w["code"] for w in api_warnings(result.id)] == [WARNING_ROLLED_BACK]


def test_a_savepoint_rolled_back_around_the_publish_is_a_rollback(worker, write_behind):
    name = uuid.uuid4().hex
    with transaction.atomic(), pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.count_orders.delay(name)
        raise RuntimeError("inner block failed")
    wait_status(result.id, "done")
    assert codes(result.id)[0] == [WARNING_ROLLED_BACK]


def test_the_right_way_gets_no_warning(worker, write_behind):
    name = uuid.uuid4().hex
    task_id = str(uuid.uuid4())
    with transaction.atomic():
        Order.objects.create(number=f"R-{name[:8]}")
        tasks.count_orders.apply_async_on_commit((name,), task_id=task_id)
        tasks.count_orders.delay_on_commit(f"{name}-2")
        transaction.on_commit(lambda: tasks.count_orders.apply_async((f"{name}-3",)))
        assert not tasks.gate(name).wait(0.5)  # Nothing is sent before the commit.
    task = wait_status(task_id, "done")
    assert task.result >= 1  # It saw the order.
    for other in (f"{name}-2", f"{name}-3"):
        assert tasks.gate(other).wait(20)
    assert codes(task_id) == ([], [])
    assert not TaskTransaction.objects.exists()
    assert api_warnings(task_id) == []


def test_the_admin_filters_and_shows_the_warnings(worker, write_behind):
    name = uuid.uuid4().hex
    with pytest.raises(RuntimeError), transaction.atomic():
        bad = tasks.count_orders.delay(name)
        raise RuntimeError("rolled back")
    good = tasks.count_orders.delay(f"{name}-ok")
    wait_status(bad.id, "done")
    wait_status(good.id, "done")
    codes(bad.id)
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/django_tasks_hub/task/", {"warning": WARNING_ROLLED_BACK})
    html = page.content.decode()
    assert bad.id in html and good.id not in html
    assert "transaction warning" in html.lower()
    page = client.get(f"/admin/django_tasks_hub/task/{bad.id}/change/").content.decode()
    assert WARNING_ROLLED_BACK in page and "th-warning" in page


def test_a_retry_sent_from_the_tasks_own_transaction_is_no_mistake(worker, write_behind):
    result = tasks.retry_in_atomic.delay()
    wait_status(result.id, "done")
    background.flush(timeout=10)
    assert not TaskTransaction.objects.filter(broker_id=result.id).exists()
    assert codes(result.id)[0] == []
