"""The tables' indexes: each one serves a query, none is kept up to date for nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_tasks_hub.models import Task, TaskRun

pytestmark = pytest.mark.django_db

# The recorder writes a task row and a run row at publish, start and end, and no update is HOT
# (the status is indexed), so every index here is written several times per task.


def _indexes(model: Any) -> dict[str, tuple[str, ...]]:
    """Index name -> its columns, for every index on ``model``'s table (constraints too)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {
        name: tuple(info["columns"])
        for name, info in found.items()
        if (info["index"] or info["unique"] or info["primary_key"]) and info["columns"]
    }


def _index_sql(name: str) -> str:
    """The statement that made the index ``name``, as the database keeps it."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        else:
            cursor.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = %s", [name]
            )
        return str(cursor.fetchone()[0])


@pytest.mark.parametrize("model", [Task, TaskRun], ids=["task", "run"])
def test_no_index_repeats_or_prefixes_another(model: Any) -> None:
    # Two indexes on the same columns (Django's extra LIKE index beside a unique CharField on
    # PostgreSQL) or one on a leading part of another (a foreign key's own index beside
    # (task, -id)) cost a write each and answer no query the other cannot.
    indexes = _indexes(model)
    columns = sorted(indexes.values())
    assert len(set(columns)) == len(columns), indexes
    for name, cols in indexes.items():
        longer = [other for other, o in indexes.items() if other != name and o[: len(cols)] == cols]
        assert not longer, f"{name} {cols} is a leading part of {longer}"


@pytest.mark.parametrize(
    ("model", "column", "index"),
    [
        (Task, "parent_id", "th_task_parent_idx"),
        (Task, "created_by_id", "th_task_created_by_idx"),
        (TaskRun, "triggered_by_id", "th_run_triggered_by_idx"),
        (TaskRun, "canceled_by_id", "th_run_canceled_by_idx"),
    ],
)
def test_columns_most_rows_leave_empty_are_indexed_only_where_set(
    model: Any, column: str, index: str
) -> None:
    assert _indexes(model)[index] == (column,)
    assert f"{column} IS NOT NULL" in _index_sql(index).replace('"', "")


def test_broker_id_is_unique_without_a_second_index() -> None:
    on_broker_id = [name for name, cols in _indexes(Task).items() if cols == ("broker_id",)]
    assert on_broker_id == ["th_task_broker_id_uniq"]


def test_deleting_a_user_empties_the_columns_that_named_them() -> None:
    # What the user indexes are for: on_delete=SET_NULL finds the user's rows through them.
    user = get_user_model().objects.create(username="leaving")
    task = Task.objects.create(name="t", broker_id="b-1", created_by=user)
    run = TaskRun.objects.create(
        task=task, name="t", broker_id="b-1", triggered_by=user, canceled_by=user
    )
    with CaptureQueriesContext(connection) as queries:
        user.delete()
    task.refresh_from_db()
    run.refresh_from_db()
    assert (task.created_by_id, run.triggered_by_id, run.canceled_by_id) == (None, None, None)
    if connection.vendor == "postgresql":
        # The partial indexes serve those UPDATEs: their WHERE names a user, so not null.
        sets = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
        assert sets
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            for sql in sets:
                cursor.execute(f"EXPLAIN {sql}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
                assert "th_" in plan and "_by_idx" in plan, plan
