"""The router and ``create_task_helpers_router()``: every route, with or without a slash."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.routers import DefaultRouter

from django_tasks_hub.api.insight import MetricsViewSet, StatsViewSet
from django_tasks_hub.api.serializers import TaskSerializer
from django_tasks_hub.api.views import (
    BulkJobViewSet,
    ScheduleViewSet,
    SeedTaskViewSet,
    TaskRunViewSet,
    TasksHubRootView,
    TaskViewSet,
)


class TaskHubRouter(DefaultRouter):
    """A router whose routes all answer with and without a trailing slash.

    The seed's clients call ``/info``, ``/list``, ``/restart`` and ``/cancel`` without one, and
    a ``PUT`` cannot follow the redirect ``APPEND_SLASH`` would answer with.
    """

    include_format_suffixes = False
    APIRootView = TasksHubRootView

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
        self.root_links: dict[str, str] = {}

    def get_api_root_view(self, api_urls: Any = None) -> Any:
        return self.APIRootView.as_view(api_root_dict=dict(self.root_links))


def create_task_helpers_router(
    queryset: QuerySet[Any],
    serializer_class: type[serializers.BaseSerializer] = TaskSerializer,
    worker: Any = None,
    *,
    basename: str | None = None,
) -> TaskHubRouter:
    """Return a router with every task route for ``queryset``'s tasks.

    ``queryset`` is of ``Task`` or of any model built on the abstract task model;
    ``serializer_class`` renders one task; ``worker`` is the Celery task that re-sends a
    restarted task (``None``: the task registered under the task's name). Mount it with
    ``path("prefix/", include(router.urls))``. URL names start with ``basename`` (default:
    the model's name): ``<basename>-list``, ``-detail``, ``-restart``, ``-cancel``, ``-runs``,
    ``<basename>-seed-info``, ``-seed-list``, ``-seed-restart``, ``-seed-cancel``,
    ``<basename>-history-list``, ``-history-detail``, ``<basename>-schedules-list`` (``GET
    schedules/``: the periodic schedules, the same whatever the task model),
    ``<basename>-stats-list``, ``<basename>-metrics-list``, ``<basename>-bulk-restart`` and
    ``-bulk-cancel`` (``tasks/restart/``, ``tasks/cancel/``), ``<basename>-bulk-job-list``,
    ``-bulk-job-detail`` and ``-bulk-job-resume``.
    """
    model = queryset.model
    basename = basename or model._meta.model_name
    attrs = {"queryset": queryset, "serializer_class": serializer_class, "worker": worker}
    name = model.__name__
    tasks = type(f"{name}ViewSet", (TaskViewSet,), {**attrs, "__doc__": TaskViewSet.__doc__})
    seed = type(
        f"{name}SeedViewSet", (SeedTaskViewSet,), {**attrs, "__doc__": SeedTaskViewSet.__doc__}
    )
    history = type(
        f"{name}RunViewSet",
        (TaskRunViewSet,),
        {"task_queryset": queryset, "__doc__": TaskRunViewSet.__doc__},
    )
    router = TaskHubRouter()
    router.register("tasks", tasks, basename=basename)
    router.register("task-history", history, basename=f"{basename}-history")
    router.register("schedules", ScheduleViewSet, basename=f"{basename}-schedules")
    router.register("stats", StatsViewSet, basename=f"{basename}-stats")
    router.register("metrics", MetricsViewSet, basename=f"{basename}-metrics")
    router.register("bulk-jobs", BulkJobViewSet, basename=f"{basename}-bulk-job")
    router.register("", seed, basename=f"{basename}-seed")
    router.root_links = {
        "tasks": f"{basename}-list",
        "task-history": f"{basename}-history-list",
        "schedules": f"{basename}-schedules-list",
        "stats": f"{basename}-stats-list",
        "metrics": f"{basename}-metrics-list",
        "bulk-jobs": f"{basename}-bulk-job-list",
        "list": f"{basename}-seed-list",
    }
    return router
