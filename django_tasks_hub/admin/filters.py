"""The list filters and the search of the task and run lists: each answered by an index."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db import connections, models, router
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.models import (
    TEXT_SEARCH_MIN,
    WARNING_CODES,
    WARNING_ROLLED_BACK,
    WARNING_STARTED_BEFORE_COMMIT,
    TaskRun,
)
from django_tasks_hub.states import TaskStatus

#: Most distinct task names a name filter lists.
NAMES_SHOWN = 500
#: The largest run id (a 64-bit primary key) and its number of digits.
BIGINT_MAX = 2**63 - 1
RUN_ID_DIGITS = len(str(BIGINT_MAX))


def distinct_names(model: type[models.Model], using: str, limit: int = NAMES_SHOWN) -> list[str]:
    """The distinct ``name`` values of ``model``'s table, sorted, at most ``limit``.

    A skip scan: one index probe per name (``MIN(name) WHERE name > previous``) on the
    ``(name, ...)`` index, so a million rows of ten names cost ten probes, not a scan.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column = quote(model._meta.get_field("name").column)  # type: ignore[union-attr,arg-type]
    sql = (
        f"WITH RECURSIVE names(n) AS ("
        f" SELECT MIN({column}) FROM {table}"
        f" UNION ALL"
        f" SELECT (SELECT MIN(t.{column}) FROM {table} t WHERE t.{column} > names.n)"
        f" FROM names WHERE names.n IS NOT NULL"
        f") SELECT n FROM names WHERE n IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class StatusFilter(admin.SimpleListFilter):
    """Status, plus "active" and "ended" groups; never counts."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("active", _("Active (pending, processing, retrying)")),
            ("ended", _("Ended")),
            *TaskStatus.choices,
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "active":
            return queryset.active()  # type: ignore[attr-defined]
        if value == "ended":
            return queryset.terminal()  # type: ignore[attr-defined]
        if value in TaskStatus.values:
            return queryset.filter(status=value)
        return queryset


class WarningFilter(admin.SimpleListFilter):
    """Tasks with a transaction warning: started before the commit, or sent from a rollback."""

    title = _("transaction warning")
    parameter_name = "warning"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (WARNING_STARTED_BEFORE_COMMIT, _("Started before commit")),
            (WARNING_ROLLED_BACK, _("Sent from a rolled-back transaction")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in WARNING_CODES:
            return queryset
        return queryset.with_warning(value)  # type: ignore[attr-defined]


def request_names(request: HttpRequest, model: type[models.Model]) -> list[str]:
    """The task names of ``model``, looked up once per request (the list asks twice)."""
    cache: dict[Any, list[str]] = request.__dict__.setdefault("_tasks_hub_names", {})
    if model not in cache:
        cache[model] = distinct_names(model, router.db_for_read(model))
    return cache[model]


class NameFilter(admin.SimpleListFilter):
    """Task name: the names come from an index skip scan, never from counting rows."""

    title = _("task name")
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = list(request_names(request, model_admin.model))
        selected = self.value()
        if selected and selected not in names:
            names.append(selected)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(name=value) if value else queryset


def search(
    request: HttpRequest, model: type[models.Model], queryset: QuerySet[Any], term: str
) -> QuerySet[Any]:
    """Match an id, a task id (runs), a broker id, part of a task name, or (from three
    characters) text in the error and, for tasks, in the arguments."""
    term = term.strip()
    condition = Q(broker_id=term)
    try:
        parsed = uuid.UUID(term)
    except ValueError:
        pass
    else:
        condition |= Q(task_id=parsed) if model is TaskRun else Q(pk=parsed)
    # ASCII digits only (str.isdigit() also accepts "²"), and no more than a bigint holds.
    if model is TaskRun and term.isascii() and term.isdigit() and len(term) <= RUN_ID_DIGITS:
        run_id = int(term)
        if run_id <= BIGINT_MAX:
            condition |= Q(pk=run_id)
    lowered = term.lower()
    names = [n for n in request_names(request, model) if lowered in n.lower()]
    if names:
        condition |= Q(name__in=names)
    if len(term) >= TEXT_SEARCH_MIN:
        # Case-insensitive, anywhere in the error (and, for tasks, the arguments as JSON text).
        # On PostgreSQL the trigram indexes of migration 0003 answer these; elsewhere they scan.
        condition |= Q(error__icontains=term)
        if model is not TaskRun:
            queryset = queryset.alias(th_args_text=Cast("args", output_field=TextField()))
            condition |= Q(th_args_text__icontains=term)
    return queryset.filter(condition)
