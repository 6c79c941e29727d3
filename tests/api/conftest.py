"""Fixtures of the API tests: users with and without the task permissions, task rows, clients."""

from __future__ import annotations

import datetime
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import TERMINAL_STATUSES, RunTrigger
from testproject import tasks as demo_tasks
from tests.conftest import purge_queue

# A restart sends the task by its registered name: the demo tasks must be registered here.
assert demo_tasks.add.name == "demo.add"

#: Tasks made here publish to this queue, which no worker reads; it is emptied afterwards.
API_TEST_QUEUE = "tasks-hub-api-tests"


def closed_port() -> int:
    """A local port below the ephemeral range that refuses connections.

    Below that range a client's connection cannot be handed the same port as its own local
    end (a TCP self-connect), which would make a "closed" ephemeral port answer.
    """
    for port in (1, 9, 13, 17, 19, 37, 79, 113):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return port
        except OSError:
            continue
    raise RuntimeError("no closed port below 1024 on 127.0.0.1")


# An app whose broker is a closed port: restart and cancel through it must fail fast.
dead_broker_app = Celery("tasks-hub-dead-broker", set_as_current=False)
# Celery prefers the CELERY_BROKER_URL variable to broker_url; the write and read URLs win.
DEAD_BROKER_PORT = closed_port()
DEAD_BROKER_URL = f"redis://127.0.0.1:{DEAD_BROKER_PORT}/0"
dead_broker_app.conf.broker_write_url = dead_broker_app.conf.broker_read_url = DEAD_BROKER_URL
dead_broker_app.conf.broker_connection_retry_on_startup = False
dead_broker_app.conf.broker_transport_options = {"socket_connect_timeout": 1}
dead_broker_app.conf.task_serializer = "json"


def make_user(username: str, *codenames: str) -> User:
    # No password: hashing one costs a second of CPU, and the tests log in with force_login.
    user = User.objects.create(username=username)
    if codenames:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="django_tasks_hub", codename__in=codenames
            )
        )
    return user


@pytest.fixture
def reader(db: Any) -> User:
    """Authenticated, without the restart and cancel permissions."""
    return make_user("reader")


@pytest.fixture
def operator(db: Any) -> User:
    """May restart and cancel."""
    return make_user("operator", "restart_task", "cancel_task")


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def reader_client(reader: User) -> Client:
    return client_for(reader)


@pytest.fixture
def operator_client(operator: User) -> Client:
    return client_for(operator)


@pytest.fixture
def make_task(db: Any) -> Callable[..., Task]:
    """Create a task row and its runs as the worker would have left them."""

    def make(
        status: str = "done",
        name: str = "demo.add",
        *,
        tags: list[str] | None = None,
        created_at: datetime.datetime | None = None,
        runs: int = 1,
        created_by: User | None = None,
        options: dict[str, Any] | None = None,
    ) -> Task:
        now = created_at or timezone.now()
        broker_id = str(uuid.uuid4())
        ended = status in TERMINAL_STATUSES
        task = Task.objects.create(
            id=uuid.UUID(broker_id),
            name=name,
            args=[1, 2],
            status=status,
            broker_id=broker_id,
            tags=tags or [],
            attempts=runs,
            created_at=now,
            updated_at=now,
            started_at=now if status != "pending" else None,
            finished_at=now if ended else None,
            created_by=created_by,
            options=options if options is not None else {"routing_key": API_TEST_QUEUE},
        )
        for attempt in range(1, runs + 1):
            last = attempt == runs
            TaskRun.objects.create(
                task=task,
                name=name,
                attempt=attempt,
                broker_id=broker_id if last else str(uuid.uuid4()),
                trigger=RunTrigger.INITIAL if attempt == 1 else RunTrigger.RESTART,
                status=status if last else "failed",
                queued_at=now,
                started_at=now if status != "pending" or not last else None,
                finished_at=now if ended or not last else None,
            )
        return task

    return make


@pytest.fixture
def api_queue() -> Iterator[str]:
    """The queue restarted test tasks go to; emptied at the end so no message is left."""
    yield API_TEST_QUEUE
    purge_queue(API_TEST_QUEUE)
