"""FilterSets of tasks and runs; a bad value answers 400 naming the query parameter."""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django_filters.fields import IsoDateTimeField

from django_tasks_hub.insight.relations import BadRelatedKey, content_type_of, parse_key
from django_tasks_hub.models import WARNING_CODES, Task, TaskRun, TaskRunQuerySet
from django_tasks_hub.states import TaskStatus


class StatusListField(forms.MultipleChoiceField):
    """One or several statuses: ``?status=failed&status=lost`` or ``?status=failed,lost``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("choices", TaskStatus.choices)
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> list[str]:
        values = super().to_python(value)
        return [part.strip() for item in values for part in item.split(",") if part.strip()]


class StatusFilter(django_filters.Filter):
    """Keeps rows whose status is any of the given ones."""

    field_class = StatusListField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("lookup_expr", "in")
        kwargs.setdefault(
            "help_text",
            _("One or several of %(choices)s, repeated or comma-separated.")
            % {"choices": ", ".join(TaskStatus.values)},
        )
        super().__init__(*args, **kwargs)


class BoundedIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time that the database can compare (no overflow at the year's ends)."""

    default_error_messages = {
        "out_of_range": _("Enter a date-time between the years 1900 and 9000."),
    }

    def to_python(self, value: Any) -> datetime.datetime | None:
        result = super().to_python(value)
        if result is None:
            return None
        try:
            in_utc = result.astimezone(datetime.UTC) if result.tzinfo else result
        except (OverflowError, ValueError) as exc:
            raise forms.ValidationError(
                self.error_messages["out_of_range"], code="out_of_range"
            ) from exc
        if not 1900 <= in_utc.year <= 9000:
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range")
        return result


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time bound, such as ``2025-01-31T12:00:00Z``."""

    field_class = BoundedIsoDateTimeField


class RelatedKeyField(forms.CharField):
    """``<app_label>.<model>:<pk>``, read as the model and the key (400 for anything else)."""

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_key(text)
        except BadRelatedKey as exc:
            raise forms.ValidationError(str(exc), code="invalid") from exc


class RelatedFilter(django_filters.Filter):
    """Tasks linked to one business object (``services.submit(related=...)``, declarations)."""

    field_class = RelatedKeyField

    def filter(self, qs: Any, value: Any) -> Any:
        if not value:
            return qs
        model, pk = value
        return qs.related_to(content_type_of(model, qs.db), pk)


#: Longest text a name or tag filter accepts: the task name column's length. Longer input cannot
#: match, and unbounded input would reach the database as a huge parameter.
TEXT_MAX_LENGTH = 255


def text_filter(**kwargs: Any) -> django_filters.CharFilter:
    """A text filter bounded at ``TEXT_MAX_LENGTH``: longer input answers 400 naming it."""
    return django_filters.CharFilter(max_length=TEXT_MAX_LENGTH, **kwargs)


class TaskFilterSet(django_filters.FilterSet):
    """Filters of the task list: status, name, tag, created range, related object, warning."""

    status = StatusFilter(field_name="status")
    name = text_filter(
        field_name="name", help_text=_("Celery task name, exactly (for example reports.build).")
    )
    tag = text_filter(method="filter_tag", help_text=_("A tag of the Celery task, exactly."))
    created_after = DateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text=_("Tasks created at or after this ISO 8601 date-time."),
    )
    created_before = DateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text=_("Tasks created before this ISO 8601 date-time."),
    )
    related = RelatedFilter(
        help_text=_("Tasks linked to one object: <app_label>.<model>:<pk>, e.g. shop.order:42.")
    )
    warning = django_filters.ChoiceFilter(
        method="filter_warning",
        choices=[(code, code) for code in WARNING_CODES],
        help_text=_("Tasks with this transaction warning."),
    )

    class Meta:
        model = Task
        fields = ("status", "name", "tag", "created_after", "created_before", "related", "warning")

    def filter_warning(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return queryset.with_warning(value) if value else queryset  # type: ignore[attr-defined]

    def filter_tag(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return queryset.tagged(value) if value else queryset  # type: ignore[attr-defined]


class TaskRunFilterSet(django_filters.FilterSet):
    """Filters of the run history: task name, task id, status, queued range, tag."""

    task = text_filter(
        field_name="name", help_text=_("Celery task name, exactly (for example reports.build).")
    )
    task_id = django_filters.UUIDFilter(
        field_name="task_id", help_text=_("Runs of one task (its UUID).")
    )
    status = StatusFilter(field_name="status")
    start = DateTimeFilter(
        field_name="queued_at",
        lookup_expr="gte",
        help_text=_("Runs queued at or after this ISO 8601 date-time."),
    )
    end = DateTimeFilter(
        field_name="queued_at",
        lookup_expr="lt",
        help_text=_("Runs queued before this ISO 8601 date-time."),
    )
    tag = text_filter(method="filter_tag", help_text=_("A tag of the Celery task, exactly."))

    class Meta:
        model = TaskRun
        fields = ("task", "task_id", "status", "start", "end", "tag")

    def filter_tag(self, queryset: TaskRunQuerySet, name: str, value: str) -> TaskRunQuerySet:
        return queryset.tagged(value) if value else queryset
