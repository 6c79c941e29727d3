"""What keeps the admin lists fast over millions of rows: the paginator and the ChangeList."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.translation import gettext


def estimated_rows(model: type[models.Model], using: str) -> int | None:
    """PostgreSQL's estimate of the rows in ``model``'s table (``pg_class.reltuples``).

    ``None`` on other databases, and when the table was never analysed.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole large table.

    The unfiltered list on PostgreSQL takes the planner's estimate; any other list is
    counted up to ``count_limit`` rows and then reported as "more than" that. ``count_kind``
    says which: ``"exact"``, ``"estimated"`` or ``"at_least"``.
    """

    #: Rows counted exactly before a count stops; subclass to change it.
    count_limit = 10_000

    count_kind = "exact"

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        if not qs.query.where:
            estimate = estimated_rows(qs.model, qs.db)
            # Small tables are counted exactly: the estimate is coarse and counting is cheap.
            if estimate is not None and estimate > self.count_limit:
                self.count_kind = "estimated"
                return estimate
        # Counting a slice stops after count_limit + 1 rows instead of reading them all.
        counted = qs.order_by()[: self.count_limit + 1].count()
        if counted > self.count_limit:
            self.count_kind = "at_least"
        return counted


class TasksHubChangeList(ChangeList):
    """Adds a readable result count: exact, estimated ("about") or capped ("more than"), and
    leaves out of the list query the columns the list does not show (``list_defer``)."""

    def get_queryset(self, request: HttpRequest, *args: Any, **kwargs: Any) -> QuerySet[Any]:
        qs = super().get_queryset(request, *args, **kwargs)
        deferred = getattr(self.model_admin, "list_defer", ())
        # Tracebacks and results can be tens of kilobytes a row; fifty rows of them per page
        # would be read, sent and decoded for nothing.
        return qs.defer(*deferred) if deferred else qs

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        kind = getattr(self.paginator, "count_kind", "exact")
        self.count_kind = kind
        if kind != "exact" or not self.queryset.query.where:
            # The search bar repeats the count as "N results" whenever the two counts differ;
            # the pagination line already says it, with "about" or "more than" when it must.
            self.full_result_count = self.result_count
        if kind == "estimated":
            self.result_count_label = gettext("about %(count)s") % {
                "count": f"{self.result_count:,}"
            }
        elif kind == "at_least":
            self.result_count_label = gettext("more than %(count)s") % {
                "count": f"{self.result_count - 1:,}"
            }
        else:
            self.result_count_label = f"{self.result_count:,}"


class ScalableListMixin:
    """What keeps a list fast over millions of rows."""

    paginator: type[Paginator] = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    #: Columns left out of the list's query because no column of the list shows them.
    list_defer: tuple[str, ...] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TasksHubChangeList
