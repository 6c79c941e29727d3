"""Trigram indexes for the admin's search in errors and arguments, on PostgreSQL only."""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.migrations.operations.base import Operation

#: (index, table, indexed expression): each the expression the admin's search compares, so
#: that ``UPPER(col) LIKE UPPER('%term%')`` is answered by the index, not by a scan.
TRIGRAM_INDEXES = [
    ("th_task_error_trgm", "django_tasks_hub_task", 'UPPER("error")'),
    ("th_task_args_trgm", "django_tasks_hub_task", 'UPPER(("args")::text)'),
    ("th_run_error_trgm", "django_tasks_hub_taskrun", 'UPPER("error")'),
]


class OnPostgreSQL(Operation):
    """Runs the operation ``make()`` builds on PostgreSQL only; elsewhere nothing happens.

    ``django.contrib.postgres`` imports a PostgreSQL driver, which a SQLite-only project does
    not have: the operation is built (and its module imported) only on PostgreSQL. It changes
    no model state, so the models stay the same on every database.
    """

    reversible = True
    reduces_to_sql = True

    def __init__(self, make: Any, description: str) -> None:
        self.make = make
        self.description = description

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(self, app_label: str, schema_editor: Any, *states: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            self.make().database_forwards(app_label, schema_editor, *states)

    def database_backwards(self, app_label: str, schema_editor: Any, *states: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            self.make().database_backwards(app_label, schema_editor, *states)

    def describe(self) -> str:
        return f"{self.description} (PostgreSQL only)"


def trigram_extension() -> Operation:
    from django.contrib.postgres.operations import TrigramExtension

    # Other apps may use pg_trgm too: going back leaves the extension in place.
    class KeepOnReverse(TrigramExtension):
        def database_backwards(self, *args: Any) -> None:
            pass

    return KeepOnReverse()


def trigram_index(name: str, table: str, expression: str) -> Operation:
    return migrations.RunSQL(
        f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" USING gin ({expression} gin_trgm_ops)',
        f'DROP INDEX IF EXISTS "{name}"',
    )


class Migration(migrations.Migration):
    dependencies = [("django_tasks_hub", "0002_worker")]

    operations = [
        OnPostgreSQL(trigram_extension, "Create the pg_trgm extension"),
        *(
            OnPostgreSQL(
                lambda n=name, t=table, e=expression: trigram_index(n, t, e),
                f"Create the trigram index {name}",
            )
            for name, table, expression in TRIGRAM_INDEXES
        ),
    ]
