"""Offset pagination of tasks (capped, cheap totals) and cursor pagination of runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.history import HistoryQuery, InvalidCursor, get_history


def query_int(
    request: Request, name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    """The integer query parameter ``name``: ``default`` when absent, 400 when not an integer
    or below ``minimum``, capped at ``maximum``."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise serializers.ValidationError(
            {name: [_("Enter a whole number, for example %(name)s=20.") % {"name": name}]}
        ) from None
    if value < minimum:
        raise serializers.ValidationError(
            {name: [_("Enter a number of at least %(min)d.") % {"min": minimum}]}
        )
    return value if maximum is None else min(value, maximum)


class TaskListPagination(BasePagination):
    """``?offset=&limit=`` with ``limit`` capped at ``LIST_MAX_LIMIT``.

    Settings are read at request time, so ``override_settings`` works. The total is given
    only when it is cheap: when the page shows the end of the list, or when a count stopped
    at ``LIST_COUNT_MAX`` rows finds fewer; otherwise ``count`` is null and clients follow
    ``next`` (counting a large table on every page costs more than the page itself).
    """

    limit_query_param = "limit"
    offset_query_param = "offset"

    def __init__(self) -> None:
        self.limit = 0
        self.offset = 0
        self.count: int | None = None
        self.has_next = False
        self.request: Request | None = None

    def get_limit(self, request: Request) -> int:
        return query_int(
            request,
            self.limit_query_param,
            int(hub_settings.LIST_DEFAULT_LIMIT),
            1,
            int(hub_settings.LIST_MAX_LIMIT),
        )

    def get_offset(self, request: Request) -> int:
        offset = query_int(request, self.offset_query_param, 0, 0)
        maximum = int(hub_settings.LIST_MAX_OFFSET)
        if offset > maximum:
            # A deep offset makes the database walk and drop every row before it.
            raise serializers.ValidationError(
                {
                    self.offset_query_param: [
                        _(
                            "Enter an offset of at most %(max)d; narrow the list with filters "
                            "(status, name, created_after...) instead."
                        )
                        % {"max": maximum}
                    ]
                }
            )
        return offset

    def paginate_queryset(  # type: ignore[override]
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_next = len(rows) > self.limit
        rows = rows[: self.limit]
        if not self.has_next and (rows or self.offset == 0):
            self.count = self.offset + len(rows)
        else:
            cap = int(hub_settings.LIST_COUNT_MAX)
            counted = queryset.order_by()[: cap + 1].count() if cap > 0 else cap + 1
            self.count = counted if counted <= cap else None
        return rows

    def get_next_link(self) -> str | None:
        if not self.has_next or self.request is None:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        return replace_query_param(url, self.offset_query_param, self.offset + self.limit)

    def get_previous_link(self) -> str | None:
        if self.offset <= 0 or self.request is None:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        previous = max(self.offset - self.limit, 0)
        if previous == 0:
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, previous)

    def get_headers(self) -> dict[str, str]:
        """Headers carrying what the envelope carries, for the seed's plain-list ``list``."""
        headers: dict[str, str] = {}
        if self.count is not None:
            headers["X-Total-Count"] = str(self.count)
        links = [
            f'<{url}>; rel="{rel}"'
            for rel, url in (("next", self.get_next_link()), ("prev", self.get_previous_link()))
            if url
        ]
        if links:
            headers["Link"] = ", ".join(links)
        return headers

    def get_paginated_response(self, data: Sequence[Any]) -> Response:
        return Response(
            {
                "count": self.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {
                    "type": "integer",
                    "nullable": True,
                    "description": "Total number of tasks, or null when it is not cheap.",
                },
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "description": "Number of tasks to skip.",
                "schema": {"type": "integer", "minimum": 0},
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": "Number of tasks per page (capped by LIST_MAX_LIMIT).",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]


class HistoryPagination(BasePagination):
    """Cursor pagination of runs on their id, newest first: the seed's history page shape.

    A page is ``{"data": [...], "cursor": "<opaque>", "next": "<url>"}``; ``cursor`` is ``""``
    and ``next`` null on the last page. Keyed on the id, a page never repeats or skips a run
    while new runs arrive (they get larger ids and land before the first page).
    """

    cursor_query_param = "cursor"
    limit_query_param = "limit"

    def __init__(self) -> None:
        self.cursor = ""
        self.request: Request | None = None

    def paginate_queryset(  # type: ignore[override]
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        limit = query_int(
            request,
            self.limit_query_param,
            int(hub_settings.HISTORY_DEFAULT_LIMIT),
            1,
            int(hub_settings.HISTORY_MAX_LIMIT),
        )
        cursor = request.query_params.get(self.cursor_query_param, "")
        try:
            page = get_history(HistoryQuery(limit=limit, cursor=cursor), queryset)  # type: ignore[arg-type]
        except InvalidCursor as exc:
            raise serializers.ValidationError({self.cursor_query_param: [str(exc)]}) from None
        self.cursor = page.cursor
        return list(page.data)

    def get_next_link(self) -> str | None:
        if not self.cursor or self.request is None:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, self.cursor)

    def get_paginated_response(self, data: Sequence[Any]) -> Response:
        return Response({"data": data, "cursor": self.cursor, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["data", "cursor", "next"],
            "properties": {
                "data": schema,
                "cursor": {
                    "type": "string",
                    "description": "Pass it back as ?cursor= for the next page; "
                    "empty on the last page.",
                },
                "next": {"type": "string", "format": "uri", "nullable": True},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The cursor of the previous page, unchanged.",
                "schema": {"type": "string"},
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": "Number of runs per page (capped by HISTORY_MAX_LIMIT).",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]
