"""A recorded task costs the worker at most one database connection, not one per event."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from testproject import tasks
from tests.conftest import wait_status

QUEUE = "connections-test"


def sessions_opened() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


@pytest.mark.postgres
@pytest.mark.worker
def test_a_task_opens_one_connection_in_a_prefork_worker(subprocess_worker: Any) -> None:
    # Celery's Django fixup closes the connection before and after every task (unless
    # CELERY_DB_REUSE_MAX is set). Written in the signals, the start is written after that
    # close, on the connection the task's end then reuses; written before it, every task would
    # open two.
    env = {"TASKS_HUB_JSON": json.dumps({"WRITE_BEHIND": False})}
    subprocess_worker("-P", "prefork", "-c", "1", "-Q", QUEUE, "-n", f"{QUEUE}@%h", env=env)
    wait_status(tasks.add.apply_async((0, 0), queue=QUEUE).id, "done")
    count = 10
    before = sessions_opened()
    for i in range(count):
        wait_status(tasks.add.apply_async((i, i), queue=QUEUE).id, "done")
    opened = sessions_opened() - before
    # pg_stat_database is updated when a session ends; the last task's may still be open.
    assert count - 1 <= opened <= count + 1, f"{opened} connections for {count} tasks"


@pytest.mark.postgres
@pytest.mark.worker
def test_write_behind_keeps_one_connection_across_tasks(subprocess_worker: Any) -> None:
    # The writer thread's connection is its own (Django's connections are per thread): the
    # fixup's close after every task does not reach it, so tasks open no connection at all.
    env = {"TASKS_HUB_JSON": json.dumps({"WRITE_BEHIND": True})}
    worker = subprocess_worker(
        "-P", "prefork", "-c", "1", "-Q", QUEUE, "-n", f"{QUEUE}@%h", env=env
    )  # fmt: skip
    wait_status(tasks.add.apply_async((0, 0), queue=QUEUE).id, "done")
    count = 20
    before = sessions_opened()
    for i in range(count):
        wait_status(tasks.add.apply_async((i, i), queue=QUEUE).id, "done")
    worker.stop()
    opened = sessions_opened() - before
    # The writer's own session ends with the worker; a fixup connection may end too.
    assert opened <= 3, f"{opened} connections for {count} tasks"
