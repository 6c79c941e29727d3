"""A database that refuses a change answers 503 with what to do, never a 500 (issue 14 item 7).

The lock is real: another connection holds the tables' write lock, and the request's
connection waits for it only briefly (a short busy or lock timeout), as it would past its
timeout under load.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection

from django_tasks_hub.models import Task, TaskRun
from tests.api.conftest import client_for, make_user


@contextlib.contextmanager
def locked_database() -> Iterator[None]:
    """Another connection holds the write lock; this one gives up after 0.2 s."""
    settings = connection.settings_dict
    connection.ensure_connection()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA busy_timeout = 200")
        else:
            cursor.execute("SET lock_timeout = '200ms'")
    if connection.vendor == "sqlite":
        other: Any = sqlite3.connect(settings["NAME"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        other = psycopg.connect(
            host=settings["HOST"] or "127.0.0.1",
            port=settings["PORT"] or 5432,
            user=settings["USER"],
            password=settings["PASSWORD"] or None,
            dbname=settings["NAME"],
        )
        # The task rows, as a restart or a cancel elsewhere would hold them.
        other.execute(f"SELECT id FROM {Task._meta.db_table} FOR UPDATE")
    try:
        yield
    finally:
        other.rollback() if connection.vendor != "sqlite" else other.execute("ROLLBACK")
        other.close()
        connection.close()  # The short timeout goes with it.


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["restart", "cancel"])
def test_a_locked_database_answers_503_with_a_message(make_task: Any, action: str) -> None:
    client = client_for(make_user("operator", "restart_task", "cancel_task"))
    task = make_task("failed" if action == "restart" else "processing")
    with locked_database():
        response = client.post(f"/api/tasks/{task.pk}/{action}/")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert "could not be written" in body["detail"] and "Try again" in body["detail"]
    assert response["Retry-After"]
    # Nothing changed, and once the lock is gone the same request goes through.
    task.refresh_from_db()
    assert task.status == ("failed" if action == "restart" else "processing")
    assert TaskRun.objects.filter(task=task).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_read_that_times_out_answers_503_too(make_task: Any) -> None:
    """Outside the services (the view's own read of the task), the same answer."""
    client = client_for(make_user("operator", "restart_task", "cancel_task"))
    task = make_task("failed")
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    other = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
    )
    try:
        other.execute(f"LOCK TABLE {Task._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        response = client.post(f"/api/tasks/{task.pk}/restart/")
    finally:
        other.rollback()
        other.close()
        connection.close()
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
