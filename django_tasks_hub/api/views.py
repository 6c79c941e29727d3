"""Viewsets of tasks (REST and the seed's query-string routes) and of the run history."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.utils.translation import gettext as _
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import APIRootView
from rest_framework.viewsets import GenericViewSet

from django_tasks_hub import services
from django_tasks_hub.api.exceptions import headers_for, to_api_exception
from django_tasks_hub.api.filters import TaskFilterSet, TaskRunFilterSet
from django_tasks_hub.api.pagination import HistoryPagination, TaskListPagination
from django_tasks_hub.api.permissions import (
    BULK_CODENAMES,
    HasBulkActionPermission,
    action_permission,
    action_permission_classes,
    read_permission_classes,
    scope_queryset,
)
from django_tasks_hub.api.schema import (
    OpenApiParameter,
    OpenApiTypes,
    extend_schema,
    extend_schema_view,
)
from django_tasks_hub.api.serializers import (
    BulkJobSerializer,
    ScheduleSerializer,
    TaskRunDetailSerializer,
    TaskRunPageSerializer,
    TaskRunSerializer,
    TaskSerializer,
)
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.exceptions import BulkFilterError, TaskNotFound
from django_tasks_hub.models import BulkJob, Task, TaskRun

#: Query parameters a bulk route accepts besides the list's filters (paging is ignored).
BULK_IGNORED_PARAMETERS = frozenset({"all", "limit", "offset", "cursor", "format"})

TASK_ID_PARAMETER = OpenApiParameter(
    "task_id",
    OpenApiTypes.UUID,
    OpenApiParameter.QUERY,
    required=True,
    description="The task's id.",
)


def convert_to_response(
    task: Any, serializer_class: type[serializers.BaseSerializer], request: Request | None = None
) -> Any:
    """Return ``task`` rendered by ``serializer_class``: the data an API answer carries."""
    return serializer_class(task, context={"request": request}).data


class HubViewMixin:
    """Permissions from settings, and service errors answered through the one mapping."""

    #: ``"restart"`` or ``"cancel"`` on the routes that change a task (set per route).
    task_action: str | None = None
    #: ``"restart"`` or ``"cancel"`` on the routes that change every matching task.
    bulk_action: str | None = None

    def get_permissions(self) -> list[BasePermission]:
        classes = read_permission_classes()
        if self.task_action:
            classes = [*classes, *action_permission_classes()]
        if self.bulk_action:
            classes = [*classes, HasBulkActionPermission]
        return [cls() for cls in classes]

    def handle_exception(self, exc: Exception) -> Response:
        exc = to_api_exception(exc)
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        for name, value in headers_for(exc).items():
            response[name] = value
        return response


class BaseTaskViewSet(HubViewMixin, GenericViewSet):
    """What both task viewsets share: the scoped queryset, the lookup, restart and cancel."""

    queryset = Task.objects.all()
    serializer_class: type[serializers.BaseSerializer] = TaskSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class: Any = TaskFilterSet
    pagination_class: Any = TaskListPagination
    lookup_value_regex = "[^/]+"
    #: The Celery task that sends a restarted task (default: the one registered under its name).
    worker: Any = None

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        if queryset.model is TaskRun:
            return scope_queryset(queryset.with_transaction(), self.request)  # type: ignore[attr-defined]
        # Ties on created_at would let offset pages repeat or skip rows: the pk breaks them.
        ordered = queryset.order_by("-created_at", "-pk")
        if hasattr(ordered, "with_transaction"):
            ordered = ordered.with_transaction()  # ``warnings`` with no query per row.
        return scope_queryset(ordered, self.request)

    def task_id(self) -> str:
        """The id of the task the request is about: the URL's, else ``?task_id=``."""
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        if lookup is not None:
            return str(lookup)
        value = self.request.query_params.get("task_id")
        if value is None or not value.strip():
            raise serializers.ValidationError(
                {"task_id": [_("This query parameter is required: ?task_id=<the task's id>.")]}
            )
        # The seed's examples quote the id (?task_id="..."): accept it quoted or not.
        return value.strip().strip("\"'")

    def get_object(self) -> Any:
        task_id = self.task_id()
        try:
            task = self.get_queryset().get(pk=task_id)
        except (ObjectDoesNotExist, DjangoValidationError, ValueError, TypeError, OverflowError):
            raise TaskNotFound(
                _("No task with id %(id)r. Use the id of a task from the list.")
                % {"id": task_id[:100]}
            ) from None
        self.check_object_permissions(self.request, task)
        return task

    def render_task(self, task: Any) -> Response:
        return Response(convert_to_response(task, self.get_serializer_class(), self.request))

    def do_restart(self) -> Response:
        task = services.restart(
            self.get_object(), self.request.user, worker=self.worker, model=self.queryset.model
        )
        return self.render_task(task)

    def do_cancel(self) -> Response:
        task = services.cancel(
            self.get_object(), self.request.user, worker=self.worker, model=self.queryset.model
        )
        return self.render_task(task)

    def bulk_filter(self) -> tuple[dict[str, Any], bool]:
        """The list's filters given to a bulk route (query string and body), and ``all``."""
        params = self.request.query_params.copy()
        data = self.request.data
        if hasattr(data, "lists"):
            for key, values in data.lists():
                params.setlist(key, values)
        elif isinstance(data, dict):
            for key, value in data.items():
                params.setlist(key, [str(v) for v in value] if isinstance(value, list) else [value])
        filters = set(self.filterset_class.base_filters)
        unknown = sorted(set(params) - filters - BULK_IGNORED_PARAMETERS)
        if unknown:
            # A typo must not widen the set to every task: refuse what the list would ignore.
            raise serializers.ValidationError(
                {
                    key: [_("Not a filter of the task list; use %(names)s.")
                          % {"names": ", ".join(sorted(filters))}]
                    for key in unknown
                }
            )  # fmt: skip
        if hub_settings.QUERYSET_SCOPE:
            raise BulkFilterError(
                _(
                    "Bulk actions by filter are off while TASKS_HUB['QUERYSET_SCOPE'] limits "
                    "what each user sees; restart or cancel tasks one by one."
                )
            )
        filterset = self.filterset_class(data=params, queryset=self.get_queryset())
        if not filterset.is_valid():
            raise serializers.ValidationError(filterset.errors)
        everything = str(params.get("all", "")).strip().lower() in ("1", "true", "yes", "on")
        return dict(filterset.form.cleaned_data), everything

    def do_bulk(self, action: str) -> Response:
        spec, everything = self.bulk_filter()
        job = services.start_bulk(
            action, spec, self.request.user, all_tasks=everything, model=self.queryset.model
        )
        namespace = getattr(self.request.resolver_match, "namespace", "")
        name = f"{self.basename}-bulk-job-detail"
        context = {
            "request": self.request,
            "job_url_name": f"{namespace}:{name}" if namespace else name,
        }
        data = BulkJobSerializer(job, context=context).data
        if job.background:
            headers = {"Location": data["url"]} if data.get("url") else {}
            return Response(data, status=status.HTTP_202_ACCEPTED, headers=headers)
        return Response(data)


@extend_schema_view(
    list=extend_schema(summary="List tasks", description="Tasks, newest first, with filters."),
    retrieve=extend_schema(summary="One task"),
)
class TaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseTaskViewSet):
    """Tasks: newest first; restart and cancel one; its runs, newest first."""

    @extend_schema(
        summary="Restart a task",
        description="Send an ended task again as a new run. 409 when it is still active, "
        "503 when the broker cannot be reached (the new run is then marked failed).",
        request=None,
    )
    @action(detail=True, methods=["post"], task_action="restart")
    def restart(self, request: Request, pk: str | None = None) -> Response:
        """Send this ended task again as a new run."""
        return self.do_restart()

    @extend_schema(
        summary="Cancel a task",
        description="Revoke an active task (terminating it if it runs) and mark it canceled. "
        "409 when it has already ended.",
        request=None,
    )
    @action(detail=True, methods=["post"], task_action="cancel")
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Revoke this active task and mark it canceled."""
        return self.do_cancel()

    @extend_schema(
        summary="Restart all matching tasks",
        description="Restart every ended task the list's filters match (query string or "
        "body: status, name, tag, created_after, created_before). A small set is done in the "
        "request (200); a larger one runs in the background (202, Location: the job's "
        "progress). 400 when no filter narrows the set, unless all=true.",
        request=None,
        responses=BulkJobSerializer,
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="restart",
        url_name="bulk-restart",
        task_action="restart",
        bulk_action="restart",
    )
    def bulk_restart(self, request: Request) -> Response:
        """Restart every ended task matching the filters."""
        return self.do_bulk("restart")

    @extend_schema(
        summary="Cancel all matching tasks",
        description="Cancel every active task the list's filters match; answers as the "
        "restart of all matching tasks does.",
        request=None,
        responses=BulkJobSerializer,
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="cancel",
        url_name="bulk-cancel",
        task_action="cancel",
        bulk_action="cancel",
    )
    def bulk_cancel(self, request: Request) -> Response:
        """Cancel every active task matching the filters."""
        return self.do_bulk("cancel")

    @extend_schema(
        summary="Runs of a task",
        responses=TaskRunPageSerializer,
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, OpenApiParameter.QUERY),
            OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY),
            OpenApiParameter("status", OpenApiTypes.STR, OpenApiParameter.QUERY),
            OpenApiParameter("start", OpenApiTypes.DATETIME, OpenApiParameter.QUERY),
            OpenApiParameter("end", OpenApiTypes.DATETIME, OpenApiParameter.QUERY),
        ],
    )
    @action(
        detail=True,
        methods=["get"],
        serializer_class=TaskRunSerializer,
        filterset_class=TaskRunFilterSet,
        pagination_class=HistoryPagination,
    )
    def runs(self, request: Request, pk: str | None = None) -> Response:
        """The runs of this task, newest first, cursor-paginated like the history."""
        task = self.get_object()
        runs = self.filter_queryset(TaskRun.objects.filter(task_id=task.pk).with_transaction())
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if self.action == "runs":
            return TaskRunSerializer
        return self.serializer_class


class SeedTaskViewSet(BaseTaskViewSet):
    """The seed's routes: ``info``, ``list``, ``restart`` and ``cancel`` with ``?task_id=``."""

    @extend_schema(
        summary="One task (seed route)",
        parameters=[TASK_ID_PARAMETER],
    )
    @action(detail=False, methods=["get"], url_path="info", url_name="info")
    def info(self, request: Request) -> Response:
        """The task ``?task_id=`` names; 404 when there is none."""
        return self.render_task(self.get_object())

    @extend_schema(
        summary="List tasks (seed route)",
        description="A plain list, newest first. X-Total-Count carries the total when it is "
        "cheap, Link the next page.",
        parameters=[
            OpenApiParameter("offset", OpenApiTypes.INT, OpenApiParameter.QUERY),
            OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY),
        ],
        responses=TaskSerializer(many=True),
    )
    @action(detail=False, methods=["get"], url_path="list", url_name="list", pagination_class=None)
    def list_tasks(self, request: Request) -> Response:
        """Tasks, newest first, as a plain list."""
        paginator = TaskListPagination()
        rows = paginator.paginate_queryset(self.filter_queryset(self.get_queryset()), request)
        data = self.get_serializer(rows, many=True).data
        return Response(data, headers=paginator.get_headers())

    @extend_schema(
        summary="Restart a task (seed route)",
        parameters=[TASK_ID_PARAMETER],
        request=None,
    )
    @action(
        detail=False, methods=["put"], url_path="restart", url_name="restart", task_action="restart"
    )
    def restart_by_query(self, request: Request) -> Response:
        """Send the ended task ``?task_id=`` names again as a new run."""
        return self.do_restart()

    @extend_schema(
        summary="Cancel a task (seed route)",
        parameters=[TASK_ID_PARAMETER],
        request=None,
    )
    @action(
        detail=False, methods=["put"], url_path="cancel", url_name="cancel", task_action="cancel"
    )
    def cancel_by_query(self, request: Request) -> Response:
        """Revoke the active task ``?task_id=`` names and mark it canceled."""
        return self.do_cancel()


@extend_schema_view(
    list=extend_schema(summary="Run history", description="Every run, newest first."),
    retrieve=extend_schema(summary="One run", responses=TaskRunDetailSerializer),
)
class TaskRunViewSet(
    HubViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet
):
    """The run history: every attempt of every task, newest first, cursor-paginated."""

    queryset = TaskRun.objects.all()
    serializer_class = TaskRunSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = TaskRunFilterSet
    pagination_class = HistoryPagination
    lookup_value_regex = "[^/]+"
    #: The tasks whose runs are shown (a factory for another task model narrows it).
    task_queryset: QuerySet[Any] = Task.objects.all()

    def get_queryset(self) -> QuerySet[Any]:
        runs = super().get_queryset()
        tasks = self.task_queryset.all()
        scoped = scope_queryset(tasks, self.request)
        # The subquery only when it narrows anything: the whole history needs no join.
        if scoped is not tasks or tasks.model is not Task or tasks.query.has_filters():
            runs = runs.filter(task__in=scoped.values("pk"))
        return runs.with_transaction()  # type: ignore[attr-defined]

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return TaskRunDetailSerializer if self.action == "retrieve" else self.serializer_class

    def get_object(self) -> Any:
        raw = str(self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, ""))
        # Run ids are positive 64-bit integers; anything else names no run.
        run_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
        run = None if run_id is None else self.get_queryset().filter(pk=run_id).first()
        if run is None:
            raise NotFound(
                _("No run with id %(id)r. Use the id of a run from the history.")
                % {"id": raw[:100]}
            )
        self.check_object_permissions(self.request, run)
        return run


class ScheduleViewSet(HubViewMixin, GenericViewSet):
    """``GET schedules/``: every periodic schedule, those needing attention first."""

    serializer_class = ScheduleSerializer
    pagination_class = None

    @extend_schema(responses=ScheduleSerializer(many=True))
    def list(self, request: Request) -> Response:
        from django_tasks_hub.schedules import summaries

        return Response(ScheduleSerializer(summaries(), many=True).data)


@extend_schema_view(
    list=extend_schema(summary="Bulk jobs", description="The newest bulk jobs, newest first."),
    retrieve=extend_schema(summary="One bulk job: its progress"),
)
class BulkJobViewSet(
    HubViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet
):
    """Restart and cancel all matching: who asked, what filter, how far each job is."""

    queryset = BulkJob.objects.select_related("created_by")
    serializer_class = BulkJobSerializer
    pagination_class = None
    #: Jobs the list shows.
    list_limit = 100

    def get_queryset(self) -> QuerySet[Any]:
        qs = super().get_queryset().order_by("-id")
        return qs[: self.list_limit] if self.action == "list" else qs

    def get_serializer_context(self) -> dict[str, Any]:
        namespace = getattr(self.request.resolver_match, "namespace", "")
        name = f"{self.basename}-detail"
        return {
            **super().get_serializer_context(),
            "job_url_name": f"{namespace}:{name}" if namespace else name,
        }

    def get_object(self) -> Any:
        raw = str(self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, ""))
        job_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
        job = None if job_id is None else self.get_queryset().filter(pk=job_id).first()
        if job is None:
            raise NotFound(_("No bulk job with id %(id)r.") % {"id": raw[:100]})
        return job

    @extend_schema(summary="Resume a stalled bulk job", request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Start again a job whose worker died; 409 when it is done or still running."""
        job = self.get_object()
        perms = [
            f"django_tasks_hub.{BULK_CODENAMES[job.action]}",
            action_permission(Task, job.action),
        ]
        if not request.user.has_perms(perms):
            raise PermissionDenied(
                _("You need the %(perms)s permissions to resume this job.")
                % {"perms": " and ".join(perms)}
            )
        job = services.resume_bulk(job, request.user)
        code = status.HTTP_202_ACCEPTED if job.background else status.HTTP_200_OK
        return Response(self.get_serializer(job).data, status=code)


class TasksHubRootView(HubViewMixin, APIRootView):
    """Links to the task list and the run history."""
