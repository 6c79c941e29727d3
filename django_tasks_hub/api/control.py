"""The workers and queues routes: ``workers/`` (with pool controls) and ``queues/`` (pause)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ViewSet

from django_tasks_hub import control
from django_tasks_hub.api.schema import extend_schema
from django_tasks_hub.api.views import HubViewMixin

#: The model permission each route needs, by viewset action.
WORKER_PERMISSIONS = {
    "list": "django_tasks_hub.view_worker",
    "grow": "django_tasks_hub.resize_worker_pool",
    "shrink": "django_tasks_hub.resize_worker_pool",
    "shutdown": "django_tasks_hub.shutdown_worker",
}
QUEUE_PERMISSIONS = {
    "list": "django_tasks_hub.view_queuepause",
    "pause": "django_tasks_hub.pause_queue",
    "resume": "django_tasks_hub.pause_queue",
}


class HasControlPermission(BasePermission):
    """The model permission of the view's ``required_permissions`` for its action."""

    message: Any = _("You do not have permission to do this.")

    def has_permission(self, request: Request, view: Any) -> bool:
        perm = view.required_permissions.get(getattr(view, "action", None) or "list")
        if perm is None:
            return True
        self.message = _("You need the %(perm)s permission for this.") % {"perm": perm}
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(perm))


class RunningSerializer(serializers.Serializer):
    broker_id = serializers.CharField()
    name = serializers.CharField()
    task_id = serializers.UUIDField(allow_null=True)


class WorkerSerializer(serializers.Serializer):
    """One worker: what it answers, or what the hub last knew of it when it does not."""

    hostname = serializers.CharField()
    answering = serializers.BooleanField()
    pool = serializers.CharField()
    concurrency = serializers.IntegerField(allow_null=True)
    queues = serializers.ListField(child=serializers.CharField())
    active = serializers.ListField(
        child=serializers.CharField(), help_text="Broker ids running now."
    )
    running = RunningSerializer(many=True)
    reserved = serializers.IntegerField(help_text="Tasks prefetched and waiting in the worker.")
    processed = serializers.IntegerField(allow_null=True)
    last_seen = serializers.DateTimeField(allow_null=True)
    heartbeat = serializers.DateTimeField(allow_null=True)
    open_runs = serializers.IntegerField()
    resizable = serializers.BooleanField()
    not_resizable_why = serializers.CharField()


class QueueSerializer(serializers.Serializer):
    """One queue: depth and oldest age from the broker (or the hub), consumers, pause."""

    name = serializers.CharField()
    depth = serializers.IntegerField(allow_null=True)
    oldest_age = serializers.FloatField(allow_null=True, help_text="Seconds, or null.")
    oldest_age_source = serializers.CharField(allow_null=True)
    consumers = serializers.ListField(child=serializers.CharField())
    paused = serializers.BooleanField()
    paused_at = serializers.DateTimeField(allow_null=True)
    paused_workers = serializers.ListField(child=serializers.CharField())
    prefetched = serializers.IntegerField(allow_null=True)
    pending = serializers.IntegerField()


class ResizeSerializer(serializers.Serializer):
    n = serializers.IntegerField(min_value=1, max_value=64, default=1)


class ControlViewSet(HubViewMixin, ViewSet):
    """Permissions: the read classes, then the model permission of the action."""

    required_permissions: dict[str, str] = {}

    def get_permissions(self) -> list[BasePermission]:
        return [*super().get_permissions(), HasControlPermission()]


class WorkerViewSet(ControlViewSet):
    """The workers that answer, and those named in open runs that no longer do."""

    required_permissions = WORKER_PERMISSIONS
    lookup_field = "hostname"
    lookup_value_regex = "[^/]+"

    @extend_schema(summary="List workers", responses=WorkerSerializer(many=True))
    def list(self, request: Request) -> Response:
        data = [w.as_dict() for w in control.workers()]
        return Response(WorkerSerializer(data, many=True).data)

    def _resize(self, request: Request, hostname: str, sign: int) -> Response:
        body = ResizeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reply = control.resize_pool(hostname, sign * int(body.validated_data["n"]))
        return Response({"hostname": hostname, "reply": reply})

    @extend_schema(summary="Grow a worker's pool", request=ResizeSerializer)
    @action(detail=True, methods=["post"])
    def grow(self, request: Request, hostname: str) -> Response:
        """Add ``n`` (default 1) processes to the pool (prefork, gevent, eventlet)."""
        return self._resize(request, hostname, 1)

    @extend_schema(summary="Shrink a worker's pool", request=ResizeSerializer)
    @action(detail=True, methods=["post"])
    def shrink(self, request: Request, hostname: str) -> Response:
        """Remove ``n`` (default 1) processes from the pool (prefork, gevent, eventlet)."""
        return self._resize(request, hostname, -1)

    @extend_schema(summary="Shut a worker down", request=None)
    @action(detail=True, methods=["post"])
    def shutdown(self, request: Request, hostname: str) -> Response:
        """Ask the worker to shut down warmly: it finishes what it runs, then exits."""
        control.shutdown_worker(hostname)
        return Response({"hostname": hostname, "shutdown": True}, status=202)


class QueueViewSet(ControlViewSet):
    """Queues known from Celery's configuration, the workers and the pauses."""

    required_permissions = QUEUE_PERMISSIONS
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    @extend_schema(summary="List queues", responses=QueueSerializer(many=True))
    def list(self, request: Request) -> Response:
        data = [q.as_dict() for q in control.queues()]
        return Response(QueueSerializer(data, many=True).data)

    def _one(self, name: str) -> dict[str, Any]:
        found = {q.name: q for q in control.queues()}
        return QueueSerializer(found[name].as_dict()).data if name in found else {"name": name}

    @extend_schema(summary="Pause a queue", request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, name: str) -> Response:
        """Stop every worker consuming the queue, and keep it paused for workers that start
        later. Tasks the workers had prefetched still start (``prefetched``)."""
        control.pause_queue(name, request.user)
        return Response(self._one(name))

    @extend_schema(summary="Resume a queue", request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str) -> Response:
        """Give the queue back to each worker that consumed it when it was paused."""
        control.resume_queue(name)
        return Response(self._one(name))
