"""The insights page: cost per task name (p50/p95), releases compared, duplicates, warnings."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.admin.display import byte_size, duration
from django_tasks_hub.admin.filters import distinct_names
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.insight import per_name as stats
from django_tasks_hub.models import (
    WARNING_ROLLED_BACK,
    WARNING_STARTED_BEFORE_COMMIT,
    TaskRun,
    TaskTransaction,
)

#: Most task names the page compares (each costs a bounded read of its newest runs).
NAMES_COMPARED = 30


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def insights_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """Per task name: what an attempt costs, how each release did, and the duplicates."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    db = TaskRun.objects.db
    wanted = request.GET.get("name", "")
    names = [wanted] if wanted else distinct_names(TaskRun, db, NAMES_COMPARED)
    runs = TaskRun.objects.using(db).all()
    cost_rows = [
        {
            "name": row.name,
            "runs": row.runs,
            "queries": " / ".join(_number(v) for v in row.queries),
            "db_time": " / ".join(duration(v) for v in row.db_time),
            "memory": " / ".join(
                byte_size(None if v is None else int(v)) for v in row.memory_growth
            ),
        }
        for row in stats.cost_by_name(names, runs)
    ]
    releases = []
    for name in names:
        compared = stats.by_release(name, runs)
        if compared:
            releases.append(
                {
                    "name": name,
                    "rows": [
                        {
                            "release": row.release or _("(none)"),
                            "runs": row.runs,
                            "failure_rate": f"{100 * row.failure_rate:.1f} %",
                            "runtime_p95": duration(row.runtime_p95),
                            "queries_p95": _number(row.queries_p95),
                        }
                        for row in compared
                    ],
                }
            )
    window = hub_settings.DUPLICATE_WINDOW_SECONDS
    duplicate_rows = [
        row for row in (stats.duplicates(name, window, runs) for name in names)
        if row.redelivered or row.groups
    ]  # fmt: skip
    flagged = TaskTransaction.objects.using(db)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Task insights"),
        "opts": model_admin.opts,
        "cost_rows": cost_rows,
        "releases": releases,
        "duplicate_rows": duplicate_rows,
        "duplicate_window": duration(window),
        "warnings": [
            (WARNING_STARTED_BEFORE_COMMIT, flagged.started_before_commit().count()),
            (WARNING_ROLLED_BACK, flagged.rolled_back().count()),
        ],
        "name": wanted,
    }
    return TemplateResponse(request, "admin/django_tasks_hub/insights.html", context)
