"""services.submit inside a caller's transaction: the row of a message really sent stays."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from django_tasks_hub import services
from django_tasks_hub.models import Task
from testproject import tasks


class Rollback(Exception):
    pass


def submit_then_roll_back() -> str:
    broker_id = ""
    with pytest.raises(Rollback), transaction.atomic():
        task = services.submit(tasks.add, (1, 2), queue="nobody-reads-this")
        assert task is not None  # Returned, as ever.
        broker_id = task.broker_id
        raise Rollback
    return broker_id


def test_a_caller_that_rolls_back_keeps_the_record_of_what_it_sent(
    transactional_db: Any,
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite: see test_on_sqlite_the_row_is_in_the_callers_transaction")
    broker_id = submit_then_roll_back()
    # Written on a connection of its own, committed before the message was even sent.
    assert Task.objects.filter(broker_id=broker_id, status="pending").exists()


def test_on_sqlite_the_row_is_in_the_callers_transaction(transactional_db: Any) -> None:
    """SQLite has one writer at a time: a second connection would wait for the caller's
    write lock until its timeout and fail. So the row is written in the caller's transaction
    (at once, without waiting), and a rollback takes it away; the worker's events write it
    again when the task runs (rule 2)."""
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite behaviour")
    broker_id = submit_then_roll_back()
    assert not Task.objects.filter(broker_id=broker_id).exists()
