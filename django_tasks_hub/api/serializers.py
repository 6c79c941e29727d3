"""Serializers of tasks and runs; every field is read-only (tasks change only via services)."""

from __future__ import annotations

from typing import Any

from django.urls import NoReverseMatch
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.reverse import reverse

from django_tasks_hub.models import WARNING_CODES, BulkJob, Task, TaskRun
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
    "schedule",
    "warnings",
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
    "schedule",
    "schedule_origin",
    "db_queries",
    "db_time",
    "memory_growth",
    "release",
    "warnings",
)


class WarningSerializer(serializers.Serializer):
    """A mistake the hub saw around a task (docs/insights.md lists the codes)."""

    code = serializers.ChoiceField(choices=[(code, code) for code in WARNING_CODES])
    message = serializers.CharField(help_text=_("What happened and how to fix it."))


class TaskSerializer(serializers.ModelSerializer):
    """A task as the API shows it; subclass it (``Meta.model``, ``Meta.fields``) for your own."""

    runtime = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text=_("Seconds between the start and the end of the latest attempt."),
    )
    warnings = WarningSerializer(many=True, read_only=True)

    class Meta:
        model = Task
        fields = TASK_FIELDS
        read_only_fields = TASK_FIELDS


class TaskRunSerializer(serializers.ModelSerializer):
    """One run, in the seed's ``TaskRunHistory`` shape (``task`` is the name, ``state``)."""

    task_id = serializers.UUIDField(read_only=True)
    task = serializers.CharField(source="name", read_only=True, help_text=_("Celery task name."))
    state = serializers.ChoiceField(source="status", choices=TaskStatus.choices, read_only=True)
    warnings = WarningSerializer(many=True, read_only=True)

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


class ScheduleSerializer(serializers.Serializer):
    """A periodic schedule with its last run, its next fire time and its missed fire times."""

    name = serializers.CharField(read_only=True)
    task = serializers.CharField(source="schedule.task", read_only=True)
    schedule = serializers.CharField(
        source="schedule.description", read_only=True, help_text=_("The schedule in words.")
    )
    defined_in = serializers.CharField(
        source="schedule.source",
        read_only=True,
        help_text=_("beat_schedule or django_celery_beat."),
    )
    enabled = serializers.BooleanField(source="schedule.enabled", read_only=True)
    last_run_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text=_("When its latest run was sent.")
    )
    last_status = serializers.ChoiceField(
        choices=TaskStatus.choices, read_only=True, allow_null=True
    )
    last_task_id = serializers.UUIDField(read_only=True, allow_null=True)
    next_run_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text=_("Its next fire time (null: not computable, or disabled)."),
    )
    missed = serializers.IntegerField(
        read_only=True,
        help_text=_("Fire times missed within TASKS_HUB['SCHEDULE_MISSED_WINDOW_SECONDS']."),
    )
    success_rate = serializers.FloatField(
        read_only=True, allow_null=True, help_text=_("Done / ended, over its recent runs.")
    )
    median_runtime = serializers.FloatField(read_only=True, allow_null=True)
    needs_attention = serializers.BooleanField(read_only=True)


class BulkJobSerializer(serializers.ModelSerializer):
    """A bulk job: what it does to which tasks, who asked, and how far it is."""

    created_by = serializers.SerializerMethodField()
    changed = serializers.IntegerField(source="succeeded", read_only=True)
    percent = serializers.FloatField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = BulkJob
        fields = (
            "id",
            "url",
            "action",
            "status",
            "filters",
            "description",
            "created_by",
            "background",
            "total",
            "processed",
            "changed",
            "skipped",
            "skip_reasons",
            "percent",
            "error",
            "created_at",
            "started_at",
            "updated_at",
            "finished_at",
        )
        read_only_fields = fields

    def get_created_by(self, job: Any) -> str | None:
        user = job.created_by
        return None if user is None else user.get_username()

    def get_url(self, job: Any) -> str | None:
        """The job's progress in the API (poll it until ``status`` is done or failed)."""
        request = self.context.get("request")
        name = self.context.get("job_url_name")
        if not name:
            return None
        try:
            return str(reverse(name, args=[job.pk], request=request))
        except NoReverseMatch:
            return None
