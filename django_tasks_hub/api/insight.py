"""``GET stats/`` and ``GET metrics``: the overview's figures as JSON, and the Prometheus text."""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import DatabaseError
from django.http import HttpResponse
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ViewSet

from django_tasks_hub.api.permissions import HasViewPermission, MetricsPermission
from django_tasks_hub.api.schema import OpenApiTypes, extend_schema
from django_tasks_hub.insight import metrics, stats


def _database_down() -> Response:
    return Response(
        {
            "detail": _("The database cannot be reached; try again when it is back."),
            "code": "database_unavailable",
        },
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


class StatsViewSet(ViewSet):
    """The overview's figures: statuses now, ends per minute and hour, task names, errors."""

    def get_permissions(self) -> list[BasePermission]:
        return [HasViewPermission()]

    @extend_schema(summary="Statistics", responses=OpenApiTypes.OBJECT)
    def list(self, request: Request) -> Response:
        """Tasks per status now; runs ended and failed per minute (last hour) and per hour
        (last day); per task name over the last 24 hours: runs, failure rate, p50 and p95
        runtime, p95 queue wait, last failure; the top errors. From rollups, never a scan."""
        try:
            return Response(stats.overview())
        except DatabaseError:
            return _database_down()


class MetricsViewSet(ViewSet):
    """The Prometheus exposition (``prometheus_client``'s text format)."""

    def get_permissions(self) -> list[BasePermission]:
        return [MetricsPermission()]

    def permission_denied(
        self, request: Request, message: Any = None, code: Any = None
    ) -> NoReturn:
        # Say how to get in (a token or a permission), not only "not authenticated".
        if request.authenticators and not request.successful_authenticator:
            raise NotAuthenticated(detail=message or MetricsPermission.message)
        super().permission_denied(request, message, code)

    @extend_schema(summary="Prometheus metrics", responses={(200, "text/plain"): OpenApiTypes.STR})
    def list(self, request: Request) -> Any:
        """Task counts, runtime and wait histograms by name, queue depth, workers up."""
        try:
            body, content_type = metrics.exposition()
        except ImportError:
            return Response(
                {
                    "detail": _(
                        "The metrics need prometheus_client: pip install "
                        "'django-tasks-hub[metrics]'."
                    ),
                    "code": "metrics_unavailable",
                },
                status=status.HTTP_501_NOT_IMPLEMENTED,
            )
        except DatabaseError:
            return _database_down()
        return HttpResponse(body, content_type=content_type)
