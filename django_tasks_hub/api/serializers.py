"""Serializers of tasks and runs; every field is read-only (tasks change only via services)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import TaskStatus

TASK_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "status",
    "args",
    "kwargs",
    "options",
    "broker_id",
    "retries",
    "attempts",
    "parent",
    "tags",
    "result",
    "error",
    "traceback",
    "progress",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "runtime",
    "created_by",
    "worker",
)

RUN_FIELDS: tuple[str, ...] = (
    "id",
    "task_id",
    "task",
    "attempt",
    "broker_id",
    "retries",
    "trigger",
    "triggered_by",
    "state",
    "queued_at",
    "started_at",
    "finished_at",
    "runtime",
    "worker",
    "result",
    "error",
    "canceled_by",
)


class TaskSerializer(serializers.ModelSerializer):
    """A task as the API shows it; subclass it (``Meta.model``, ``Meta.fields``) for your own."""

    runtime = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text=_("Seconds between the start and the end of the latest attempt."),
    )

    class Meta:
        model = Task
        fields = TASK_FIELDS
        read_only_fields = TASK_FIELDS


class TaskRunSerializer(serializers.ModelSerializer):
    """One run, in the seed's ``TaskRunHistory`` shape (``task`` is the name, ``state``)."""

    task_id = serializers.UUIDField(read_only=True)
    task = serializers.CharField(source="name", read_only=True, help_text=_("Celery task name."))
    state = serializers.ChoiceField(source="status", choices=TaskStatus.choices, read_only=True)

    class Meta:
        model = TaskRun
        fields = RUN_FIELDS
        read_only_fields = fields


class TaskRunDetailSerializer(TaskRunSerializer):
    """One run with its traceback (left out of pages to keep them small)."""

    class Meta(TaskRunSerializer.Meta):
        fields = (*RUN_FIELDS, "traceback")
        read_only_fields = fields


class TaskRunPageSerializer(serializers.Serializer):
    """A page of runs: the seed's ``TaskRunHistoryPage`` plus the ``next`` link."""

    data = TaskRunSerializer(many=True)  # type: ignore[assignment]
    cursor = serializers.CharField(
        help_text=_("Pass it back as ?cursor= for the next page; empty on the last page.")
    )
    next = serializers.URLField(allow_null=True, help_text=_("The next page, or null."))


class ErrorSerializer(serializers.Serializer):
    """Every error answer: what went wrong and what to do about it."""

    detail = serializers.CharField()
    code = serializers.CharField(required=False)
    status = serializers.ChoiceField(
        choices=TaskStatus.choices,
        required=False,
        help_text=_("The task's current status (409 answers)."),
    )
