"""Fixtures of the admin tests: users with and without the task permissions, and task rows."""

from __future__ import annotations

import datetime
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun
from testproject import tasks as demo_tasks
from testproject.celery import app as celery_app

# A restart sends the task by its registered name: the demo tasks must be registered here.
assert demo_tasks.fail.name == "demo.fail"

#: Restarted tasks are sent to this queue, which no worker reads; it is emptied afterwards.
ADMIN_TEST_QUEUE = "tasks-hub-admin-tests"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: A Celery app whose broker port has nobody listening: a real refused connection. The shared
#: demo tasks register on it too, so a restart finds them by name.
DEAD_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
dead_broker_app = Celery("admin-dead-broker", broker=DEAD_BROKER_URL, set_as_current=False)
# The environment's CELERY_BROKER_URL would win over ``broker``; these settings win over it.
dead_broker_app.conf.broker_write_url = dead_broker_app.conf.broker_read_url = DEAD_BROKER_URL
dead_broker_app.conf.broker_connection_retry_on_startup = False
dead_broker_app.conf.broker_connection_max_retries = 1


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_tasks_hub", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def superuser(db: Any) -> User:
    return User.objects.create_superuser("boss", "boss@example.com", "pw")


@pytest.fixture
def viewer(db: Any) -> User:
    """Sees tasks and runs; may neither restart nor cancel."""
    return _staff("viewer", "view_task", "view_taskrun")


@pytest.fixture
def restarter(db: Any) -> User:
    return _staff("restarter", "view_task", "view_taskrun", "restart_task")


@pytest.fixture
def canceller(db: Any) -> User:
    return _staff("canceller", "view_task", "view_taskrun", "cancel_task")


@pytest.fixture
def make_task(db: Any) -> Callable[..., Task]:
    """Create a task row (and its first run) as the worker would have left it."""

    def make(
        name: str = "demo.fail",
        status: str = "failed",
        *,
        runs: int = 1,
        created_at: datetime.datetime | None = None,
        **fields: Any,
    ) -> Task:
        now = created_at or timezone.now()
        broker_id = fields.pop("broker_id", str(uuid.uuid4()))
        fields.setdefault("options", {"routing_key": ADMIN_TEST_QUEUE, "exchange": ""})
        if status not in ("pending",):
            fields.setdefault("started_at", now + datetime.timedelta(seconds=1))
            fields.setdefault("worker", "celery@test-host")
        if status in ("done", "failed", "canceled", "refused", "lost"):
            fields.setdefault("finished_at", now + datetime.timedelta(seconds=3))
        task = Task.objects.create(
            name=name,
            status=status,
            broker_id=broker_id,
            attempts=runs,
            created_at=now,
            updated_at=now,
            **fields,
        )
        for attempt in range(1, runs + 1):
            TaskRun.objects.create(
                task=task,
                name=name,
                attempt=attempt,
                broker_id=broker_id if attempt == runs else str(uuid.uuid4()),
                trigger="initial" if attempt == 1 else "restart",
                status=status if attempt == runs else "failed",
                queued_at=now,
                started_at=task.started_at,
                finished_at=task.finished_at,
                worker=task.worker,
            )
        return task

    return make


@pytest.fixture(autouse=True)
def _project_celery_app(settings: Any) -> None:
    # Celery's "current app" is the last app created in this thread; another test module's
    # app (a dead-broker one, say) must not be the one the admin sends restarts through.
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": "testproject.celery.app"}


@pytest.fixture(autouse=True)
def _empty_test_queue() -> Iterator[None]:
    yield
    # Restarts in these tests really publish; nothing may be left for a later worker.
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(ADMIN_TEST_QUEUE)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]
