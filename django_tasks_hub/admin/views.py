"""The admin's own pages: the overview (statuses, ends over time, task names, errors)."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from django_tasks_hub import schedules
from django_tasks_hub.admin.charts import bars
from django_tasks_hub.insight import stats
from django_tasks_hub.models import (
    WARNING_ROLLED_BACK,
    WARNING_STARTED_BEFORE_COMMIT,
    Task,
    TaskRun,
    TaskTransaction,
)

#: What a figure shows when there is nothing to measure (an en dash).
NONE = "\u2013"


class Links:
    """URLs of the filtered lists behind the figures; each list's URL reversed once."""

    def __init__(self) -> None:
        self.runs = reverse(changelist_name(TaskRun))
        self.tasks = reverse(changelist_name(Task))

    @staticmethod
    def _query(base: str, params: dict[str, Any]) -> str:
        query = {
            key: value.isoformat() if isinstance(value, datetime.datetime) else value
            for key, value in params.items()
        }
        return f"{base}?{urlencode(query)}" if query else base

    def runs_url(self, **params: Any) -> str:
        """The run history filtered by ``params`` (``status``, ``name``, ``finished_at__gte``)."""
        return self._query(self.runs, params)

    def tasks_url(self, **params: Any) -> str:
        """The task list filtered by ``params``."""
        return self._query(self.tasks, params)

    def bucket(self, point: dict[str, Any], failed: bool) -> str:
        """The runs that ended in a chart's bucket (the failed ones only with ``failed``)."""
        window = {"finished_at__gte": point["start"], "finished_at__lt": point["end"]}
        return self.runs_url(**({"status": "failed"} if failed else {}), **window)


def changelist_name(model: Any) -> str:
    return f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"


def overview_context(data: dict[str, Any]) -> dict[str, Any]:
    """What the overview template shows of ``data`` (:func:`stats.overview`), with the link
    behind every figure."""
    since = data["since"]
    links = Links()
    runs_url, tasks_url = links.runs_url, links.tasks_url
    statuses = [
        {"status": status, "count": count, "url": tasks_url(status=status)}
        for status, count in data["statuses"].items()
    ]
    names = []
    for row in data["names"]:
        window = {"name": row["name"], "finished_at__gte": since}
        names.append(
            {
                **row,
                # Formatted here: the template's floatformat was a tenth of the page's time.
                **{
                    f"{key}_text": NONE if row[key] is None else f"{row[key]:.3f} s"
                    for key in ("p50_runtime", "p95_runtime", "p95_wait")
                },
                "failure_text": NONE
                if row["failure_rate"] is None
                else f"{row['failure_rate'] * 100:.0f} %",
                "runs_url": runs_url(**window),
                "failed_url": runs_url(status="failed", **window),
            }
        )
    errors = [
        {
            **row,
            "url": runs_url(
                status="failed", error__startswith=row["error"], finished_at__gte=since
            ),
        }
        for row in data["errors"]
    ]
    return {
        "data": data,
        "statuses": statuses,
        "total_tasks": sum(data["statuses"].values()),
        "all_tasks_url": tasks_url(),
        "minute_chart": bars(data["per_minute"], links.bucket, _("Runs ended per minute")),
        "hour_chart": bars(data["per_hour"], links.bucket, _("Runs ended per hour"), "%H:00"),
        "names": names,
        "errors": errors,
        "day_runs_url": runs_url(finished_at__gte=since),
    }


def attention_context() -> dict[str, Any]:
    """What needs a person: schedules that missed a fire time or failed their last run, and
    tasks sent in a way that breaks with transactions (each count links to its rows)."""
    tasks = reverse(changelist_name(Task))
    schedules_url = reverse("admin:django_tasks_hub_schedules")
    warnings = [
        {
            "code": code,
            "label": label,
            "count": qs.count(),  # Partial index th_tx_warning_idx: flagged rows only.
            "url": f"{tasks}?{urlencode({'warning': code})}",
        }
        for code, label, qs in (
            (
                WARNING_STARTED_BEFORE_COMMIT,
                _("Started before the sender's transaction committed"),
                TaskTransaction.objects.started_before_commit(),
            ),
            (
                WARNING_ROLLED_BACK,
                _("Sent from a transaction that rolled back"),
                TaskTransaction.objects.rolled_back(),
            ),
        )
    ]
    return {
        "attention_schedules": [
            {"summary": summary, "url": f"{schedules_url}#schedule-{summary.schedule.pk}"}
            for summary in schedules.needing_attention()
        ],
        "schedules_url": schedules_url,
        "transaction_warnings": warnings,
    }


def overview_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """The overview page; needs the view permission on tasks."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Overview"),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
    }
    try:
        context.update(overview_context(stats.overview()))
        context.update(attention_context())
    except DatabaseError:
        context["database_down"] = True
        return TemplateResponse(
            request, "admin/django_tasks_hub/overview.html", context, status=503
        )
    return TemplateResponse(request, "admin/django_tasks_hub/overview.html", context)
