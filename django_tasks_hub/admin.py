"""Admin for tasks and their runs: read-only pages, restart and cancel through the services."""

from __future__ import annotations

import datetime
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models, router
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from django_tasks_hub import services
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    TaskHubError,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import ACTIVE_STATUSES, TERMINAL_STATUSES, TaskStatus

#: Most distinct task names a name filter lists.
NAMES_SHOWN = 500
#: Runs shown inline on a task page; the rest are one click away in the run history.
RUNS_SHOWN = 50
#: Children linked from a task page.
CHILDREN_SHOWN = 20
#: Longest JSON text shown on a page, in characters.
JSON_SHOWN = 50_000

EMPTY = "-"


# -- queries -----------------------------------------------------------------------------------


def distinct_names(model: type[models.Model], using: str, limit: int = NAMES_SHOWN) -> list[str]:
    """The distinct ``name`` values of ``model``'s table, sorted, at most ``limit``.

    A skip scan: one index probe per name (``MIN(name) WHERE name > previous``) on the
    ``(name, ...)`` index, so a million rows of ten names cost ten probes, not a scan.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column = quote(model._meta.get_field("name").column)  # type: ignore[union-attr,arg-type]
    sql = (
        f"WITH RECURSIVE names(n) AS ("
        f" SELECT MIN({column}) FROM {table}"
        f" UNION ALL"
        f" SELECT (SELECT MIN(t.{column}) FROM {table} t WHERE t.{column} > names.n)"
        f" FROM names WHERE names.n IS NOT NULL"
        f") SELECT n FROM names WHERE n IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


def estimated_rows(model: type[models.Model], using: str) -> int | None:
    """PostgreSQL's estimate of the rows in ``model``'s table (``pg_class.reltuples``).

    ``None`` on other databases, and when the table was never analysed.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole large table.

    The unfiltered list on PostgreSQL takes the planner's estimate; any other list is
    counted up to ``count_limit`` rows and then reported as "more than" that. ``count_kind``
    says which: ``"exact"``, ``"estimated"`` or ``"at_least"``.
    """

    #: Rows counted exactly before a count stops; subclass to change it.
    count_limit = 10_000

    count_kind = "exact"

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        if not qs.query.where:
            estimate = estimated_rows(qs.model, qs.db)
            # Small tables are counted exactly: the estimate is coarse and counting is cheap.
            if estimate is not None and estimate > self.count_limit:
                self.count_kind = "estimated"
                return estimate
        # Counting a slice stops after count_limit + 1 rows instead of reading them all.
        counted = qs.order_by()[: self.count_limit + 1].count()
        if counted > self.count_limit:
            self.count_kind = "at_least"
        return counted


class TasksHubChangeList(ChangeList):
    """Adds a readable result count: exact, estimated ("about") or capped ("more than"), and
    leaves out of the list query the columns the list does not show (``list_defer``)."""

    def get_queryset(self, request: HttpRequest, *args: Any, **kwargs: Any) -> QuerySet[Any]:
        qs = super().get_queryset(request, *args, **kwargs)
        deferred = getattr(self.model_admin, "list_defer", ())
        # Tracebacks and results can be tens of kilobytes a row; fifty rows of them per page
        # would be read, sent and decoded for nothing.
        return qs.defer(*deferred) if deferred else qs

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        kind = getattr(self.paginator, "count_kind", "exact")
        self.count_kind = kind
        if kind != "exact" or not self.queryset.query.where:
            # The search bar repeats the count as "N results" whenever the two counts differ;
            # the pagination line already says it, with "about" or "more than" when it must.
            self.full_result_count = self.result_count
        if kind == "estimated":
            self.result_count_label = gettext("about %(count)s") % {
                "count": f"{self.result_count:,}"
            }
        elif kind == "at_least":
            self.result_count_label = gettext("more than %(count)s") % {
                "count": f"{self.result_count - 1:,}"
            }
        else:
            self.result_count_label = f"{self.result_count:,}"


# -- display helpers ---------------------------------------------------------------------------


def status_badge(status: str) -> SafeString:
    """A coloured badge for a task or run status."""
    try:
        label: Any = TaskStatus(status).label
    except ValueError:
        label = status
    return format_html('<span class="th-badge th-badge--{}">{}</span>', status, label)


def pretty_json(value: Any) -> SafeString | str:
    """``value`` as indented JSON in a ``<pre>``, cut at ``JSON_SHOWN`` characters."""
    if value is None:
        return EMPTY
    text = json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)
    if len(text) > JSON_SHOWN:
        text = (
            text[:JSON_SHOWN]
            + "\n… "
            + gettext("(cut: %(size)s characters in all)") % {"size": f"{len(text):,}"}
        )
    return format_html('<pre class="th-pre th-json">{}</pre>', text)


def preformatted(text: str, css: str) -> SafeString | str:
    """``text`` in a ``<pre>`` with the class ``css``; a dash when there is none."""
    if not text:
        return EMPTY
    return format_html('<pre class="th-pre {}">{}</pre>', css, text)


def duration(seconds: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.4 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds is None:
        return EMPTY
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def short_time(value: datetime.datetime | None) -> SafeString | str:
    """A timestamp that fits a column: the time today, the day and time this year, else the
    date; the full timestamp is in the tooltip."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    today = timezone.localdate()
    if local.date() == today:
        text = local.strftime("%H:%M:%S")
    elif local.year == today.year:
        text = formats.date_format(local, "M j, H:i")
    else:
        text = formats.date_format(local, "Y-m-d H:i")
    full = formats.date_format(local, "DATETIME_FORMAT")
    return format_html('<time datetime="{}" title="{}">{}</time>', local.isoformat(), full, text)


def change_url(obj_or_model: Any, pk: Any) -> str:
    """The admin page of the row ``pk`` of ``obj_or_model``'s model."""
    opts = obj_or_model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])


def short_id(pk: Any) -> str:
    """The first eight characters of an id: enough to tell tasks apart in a message."""
    return str(pk)[:8]


# -- filters -----------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    """Status, plus "active" and "ended" groups; never counts."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("active", _("Active (pending, processing, retrying)")),
            ("ended", _("Ended")),
            *TaskStatus.choices,
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "active":
            return queryset.filter(status__in=sorted(ACTIVE_STATUSES))
        if value == "ended":
            return queryset.filter(status__in=sorted(TERMINAL_STATUSES))
        if value in TaskStatus.values:
            return queryset.filter(status=value)
        return queryset


def _request_names(request: HttpRequest, model: type[models.Model]) -> list[str]:
    """The task names of ``model``, looked up once per request (the list asks twice)."""
    cache: dict[Any, list[str]] = request.__dict__.setdefault("_tasks_hub_names", {})
    if model not in cache:
        cache[model] = distinct_names(model, router.db_for_read(model))
    return cache[model]


class NameFilter(admin.SimpleListFilter):
    """Task name: the names come from an index skip scan, never from counting rows."""

    title = _("task name")
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = list(_request_names(request, model_admin.model))
        selected = self.value()
        if selected and selected not in names:
            names.append(selected)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(name=value) if value else queryset


# -- shared admin behaviour --------------------------------------------------------------------


class ReadOnlyAdminMixin:
    """Rows are written by the workers and the services only: view and delete, never edit."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ScalableListMixin:
    """What keeps a list fast over millions of rows."""

    paginator: type[Paginator] = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    #: Columns left out of the list's query because no column of the list shows them.
    list_defer: tuple[str, ...] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TasksHubChangeList


def _search(
    request: HttpRequest, model: type[models.Model], queryset: QuerySet[Any], term: str
) -> QuerySet[Any]:
    """Match an id, a task id (runs), a broker id, or part of a task name: each indexed."""
    term = term.strip()
    condition = Q(broker_id=term)
    try:
        parsed = uuid.UUID(term)
    except ValueError:
        pass
    else:
        condition |= Q(task_id=parsed) if model is TaskRun else Q(pk=parsed)
    if model is TaskRun and term.isdigit():
        condition |= Q(pk=int(term))
    lowered = term.lower()
    names = [n for n in _request_names(request, model) if lowered in n.lower()]
    if names:
        condition |= Q(name__in=names)
    return queryset.filter(condition)


# -- runs --------------------------------------------------------------------------------------


class NewestRunsFormSet(BaseInlineFormSet):
    """The newest ``RUNS_SHOWN`` runs only: a task retried a thousand times still opens."""

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_newest"):
            self._newest = super().get_queryset()[:RUNS_SHOWN]
        return self._newest


class RunDisplayMixin:
    """Columns shared by the run inline and the run admin."""

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, run: TaskRun) -> SafeString:
        return status_badge(run.status)

    @admin.display(description=_("runtime"), ordering="runtime")
    def runtime_display(self, run: TaskRun) -> str:
        return duration(run.runtime)

    @admin.display(description=_("queued"), ordering="queued_at")
    def queued(self, run: TaskRun) -> Any:
        return short_time(run.queued_at)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, run: Any) -> Any:
        return short_time(run.started_at)

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, run: TaskRun) -> Any:
        return short_time(run.finished_at)

    @admin.display(description=_("outcome"))
    def outcome(self, run: TaskRun) -> Any:
        if run.error:
            first = run.error.strip().splitlines()[0] if run.error.strip() else run.error
            return format_html('<span class="th-error-line" title="{}">{}</span>', run.error, first)
        if run.status == TaskStatus.DONE:
            text = json.dumps(run.result, ensure_ascii=False, cls=DjangoJSONEncoder)
            return text if len(text) <= 80 else text[:79] + "…"
        return EMPTY


class TaskRunInline(RunDisplayMixin, admin.TabularInline):
    """The run history on a task page, newest first."""

    model = TaskRun
    formset = NewestRunsFormSet
    fields = (
        "run_link",
        "attempt",
        "trigger",
        "status_badge",
        "triggered_by",
        "canceled_by",
        "queued",
        "started",
        "finished",
        "runtime_display",
        "worker",
        "outcome",
    )
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    can_delete = False
    classes = ("th-runs",)
    verbose_name_plural = _("run history (newest first)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        return super().get_queryset(request).select_related("triggered_by", "canceled_by")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The runs are the task's history: whoever may see the task sees them.
        parent = self.admin_site._registry.get(self.parent_model)
        return bool(parent and parent.has_view_permission(request, obj))

    @admin.display(description=_("run"))
    def run_link(self, run: TaskRun) -> SafeString:
        return format_html('<a href="{}">#{}</a>', change_url(run, run.pk), run.pk)


# -- tasks -------------------------------------------------------------------------------------


@admin.register(Task)
class TaskAdmin(ScalableListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The task list and the task page, with restart and cancel."""

    list_display = (
        "name",
        "status_badge",
        "progress_bar",
        "attempts",
        "created",
        "started",
        "runtime_display",
        "worker",
    )
    list_filter = (StatusFilter, NameFilter, ("created_at", admin.DateFieldListFilter))
    list_defer = ("args", "kwargs", "options", "tags", "result", "error", "traceback")
    date_hierarchy = "created_at"
    search_fields = ("=id", "=broker_id", "name")
    search_help_text = _("A task id, a broker (Celery) id, or part of a task name.")
    ordering = ("-created_at",)
    actions = ("restart_selected", "cancel_selected")
    #: Most tasks one Restart or Cancel action goes through.
    action_limit = 1000
    inlines = (TaskRunInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "status_badge",
                    "progress_display",
                    "broker_id",
                    "attempts",
                    "retries",
                    "worker",
                    "created_by",
                    "tags",
                )
            },
        ),
        (_("Outcome"), {"fields": ("result_json", "error_text", "traceback_text")}),
        (
            _("Timing"),
            {
                "fields": (
                    "created_at",
                    "updated_at",
                    "started_at",
                    "finished_at",
                    "runtime_display",
                )
            },
        ),
        (_("Call"), {"fields": ("args_json", "kwargs_json", "options_json")}),
        (_("Related"), {"fields": ("parent_link", "children_links", "runs_link")}),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    # -- permissions -------------------------------------------------------------------------

    def _has_perm(self, request: HttpRequest, action: str) -> bool:
        codename = get_permission_codename(action, self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_restart_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whether the user holds ``restart_task``."""
        return self._has_perm(request, "restart")

    def has_cancel_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whether the user holds ``cancel_task``."""
        return self._has_perm(request, "cancel")

    # -- list --------------------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        return _search(request, self.model, queryset, search_term), False

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, task: Task) -> SafeString:
        return status_badge(task.status)

    @admin.display(description=_("progress"))
    def progress_bar(self, task: Task) -> SafeString | str:
        if task.status != TaskStatus.PROCESSING:
            return ""
        progress = task.progress or {}
        current, total = progress.get("current"), progress.get("total")
        message = str(progress.get("message") or "")
        if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
            percent = max(0.0, min(100.0, 100.0 * current / total))
            return format_html(
                '<span class="th-progress" title="{}" role="progressbar" aria-valuemin="0" '
                'aria-valuemax="100" aria-valuenow="{}"><span class="th-progress__bar" '
                'style="width: {}%"></span></span> <span class="th-progress__text">{}%</span>',
                message,
                f"{percent:.0f}",
                f"{percent:.1f}",
                f"{percent:.0f}",
            )
        return format_html(
            '<span class="th-progress th-progress--unknown" title="{}" role="progressbar">'
            '<span class="th-progress__bar"></span></span>',
            message or gettext("running"),
        )

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, task: Task) -> Any:
        return short_time(task.created_at)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, task: Task) -> Any:
        return short_time(task.started_at)

    @admin.display(description=_("runtime"))
    def runtime_display(self, task: Task) -> str:
        if task.runtime is not None:
            return duration(task.runtime)
        if task.status == TaskStatus.PROCESSING and task.started_at:
            # Still running: how long so far.
            elapsed = (timezone.now() - task.started_at).total_seconds()
            return gettext("%(time)s so far") % {"time": duration(max(elapsed, 0.0))}
        return EMPTY

    # -- task page ---------------------------------------------------------------------------

    @admin.display(description=_("progress"))
    def progress_display(self, task: Task) -> Any:
        if not task.progress:
            return EMPTY
        bar = self.progress_bar(task)
        return (
            format_html("{}{}", bar, pretty_json(task.progress))
            if bar
            else pretty_json(task.progress)
        )

    @admin.display(description=_("positional arguments"))
    def args_json(self, task: Task) -> Any:
        return pretty_json(task.args)

    @admin.display(description=_("keyword arguments"))
    def kwargs_json(self, task: Task) -> Any:
        return pretty_json(task.kwargs)

    @admin.display(description=_("options"))
    def options_json(self, task: Task) -> Any:
        return pretty_json(task.options)

    @admin.display(description=_("result"))
    def result_json(self, task: Task) -> Any:
        return pretty_json(task.result)

    @admin.display(description=_("error"))
    def error_text(self, task: Task) -> Any:
        return preformatted(task.error, "th-error")

    @admin.display(description=_("traceback"))
    def traceback_text(self, task: Task) -> Any:
        return preformatted(task.traceback, "th-traceback")

    @admin.display(description=_("parent"))
    def parent_link(self, task: Task) -> Any:
        if task.parent_id is None:
            return EMPTY
        # The foreign key has no database constraint: the parent row may be missing.
        name = Task.objects.filter(pk=task.parent_id).values_list("name", flat=True).first()
        if name is None:
            return format_html(
                '<span class="th-missing">{} ({})</span>',
                task.parent_id,
                gettext("not recorded"),
            )
        return format_html(
            '<a href="{}">{}</a> <span class="th-id">{}</span>',
            change_url(task, task.parent_id),
            name,
            task.parent_id,
        )

    @admin.display(description=_("children"))
    def children_links(self, task: Task) -> Any:
        children = list(
            Task.objects.filter(parent_id=task.pk)
            .order_by("created_at")
            .values_list("pk", "name", "status")[: CHILDREN_SHOWN + 1]
        )
        if not children:
            return EMPTY
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} <span class="th-id">{}</span></li>',
            (
                (change_url(task, pk), name, status_badge(status), short_id(pk))
                for pk, name, status in children[:CHILDREN_SHOWN]
            ),
        )
        more: Any = ""
        if len(children) > CHILDREN_SHOWN:
            more = format_html(
                '<li><a href="{}?parent__exact={}">{}</a></li>',
                reverse("admin:django_tasks_hub_task_changelist"),
                task.pk,
                gettext("all children"),
            )
        return format_html('<ul class="th-children">{}{}</ul>', items, more)

    @admin.display(description=_("runs"))
    def runs_link(self, task: Task) -> Any:
        url = reverse("admin:django_tasks_hub_taskrun_changelist")
        return format_html(
            '<a href="{}?task__exact={}">{}</a>',
            url,
            task.pk,
            gettext("all runs of this task in the run history"),
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            info = self.opts.app_label, self.opts.model_name
            context.update(
                show_restart=obj.is_terminal and self.has_restart_permission(request, obj),
                show_cancel=obj.is_active and self.has_cancel_permission(request, obj),
                restart_url=reverse(f"admin:{info[0]}_{info[1]}_restart", args=[obj.pk]),
                cancel_url=reverse(f"admin:{info[0]}_{info[1]}_cancel", args=[obj.pk]),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/restart/",
                wrap(require_POST(self.restart_view)),
                name="{}_{}_restart".format(*info),
            ),
            path(
                "<path:object_id>/cancel/",
                wrap(require_POST(self.cancel_view)),
                name="{}_{}_cancel".format(*info),
            ),
            *super().get_urls(),
        ]

    def restart_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Restart button of a task page."""
        if not self.has_restart_permission(request):
            raise PermissionDenied
        return self._one(request, object_id, services.restart, _RESTART)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Cancel button of a task page."""
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        return self._one(request, object_id, services.cancel, _CANCEL)

    def _one(
        self, request: HttpRequest, object_id: str, service: Callable[..., Any], verb: _Verb
    ) -> HttpResponse:
        task = self.get_object(request, unquote(object_id))
        if task is None:
            self.message_user(
                request,
                gettext("There is no task with id %(id)s; it may have been deleted.")
                % {"id": object_id},
                messages.WARNING,
            )
            return HttpResponseRedirect(reverse("admin:django_tasks_hub_task_changelist"))
        try:
            service(task, request.user)
        except TaskHubError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(
                request, verb.one % {"name": task.name, "id": short_id(task.pk)}, messages.SUCCESS
            )
        return HttpResponseRedirect(change_url(task, task.pk))

    # -- actions -----------------------------------------------------------------------------

    @admin.action(permissions=["restart"], description=_("Restart selected tasks"))
    def restart_selected(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._apply(request, queryset, services.restart, _RESTART)

    @admin.action(permissions=["cancel"], description=_("Cancel selected tasks"))
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._apply(request, queryset, services.cancel, _CANCEL)

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Task],
        service: Callable[..., Any],
        verb: _Verb,
    ) -> None:
        """Call ``service`` on each selected task; say in one message what happened."""
        # "Select all" on a large list would hold one request for as long as it takes to go
        # through every task, one transaction each: refuse it up front, change nothing.
        limit = self.action_limit
        selected = queryset.order_by()[: limit + 1].count()
        if selected > limit:
            self.message_user(
                request,
                gettext(
                    "More than %(limit)s tasks are selected; an action takes at most %(limit)s "
                    "at a time. Narrow the list with the filters or the dates, then run it again."
                )
                % {"limit": f"{limit:,}"},
                messages.ERROR,
            )
            return
        done = 0
        skipped: dict[str, list[Task]] = defaultdict(list)
        tasks = queryset.only("pk", "name", "status").order_by().iterator(chunk_size=500)
        for task in tasks:
            try:
                service(task, request.user)
            except (TaskNotRestartable, TaskNotCancelable) as exc:
                skipped[verb.reason(exc.detail.get("status", task.status))].append(task)
            except UnknownTaskName:
                skipped[gettext("task name no longer registered")].append(task)
            except TaskNotFound:
                skipped[gettext("deleted meanwhile")].append(task)
            except BrokerUnavailable:
                # The broker is down: every further task would wait for it in turn.
                skipped[gettext("the broker could not be reached")].append(task)
                for rest in tasks:
                    skipped[gettext("not tried after that")].append(rest)
                break
            else:
                done += 1
        self.message_user(request, _summary(done, skipped, verb), _level(done, skipped))


class _Verb:
    """The words of one operation in messages."""

    def __init__(self, one: Any, many: Callable[[int], str], reason: Callable[[str], str]) -> None:
        self.one = one
        self.many = many
        self.reason = reason


def _restart_reason(status: str) -> str:
    reasons: dict[str, str] = {
        TaskStatus.PENDING: gettext("still queued"),
        TaskStatus.PROCESSING: gettext("already running"),
        TaskStatus.RETRYING: gettext("waiting for a retry"),
    }
    return reasons.get(status, gettext("still active"))


def _cancel_reason(status: str) -> str:
    reasons: dict[str, str] = {
        TaskStatus.DONE: gettext("already done"),
        TaskStatus.FAILED: gettext("already failed"),
        TaskStatus.CANCELED: gettext("already cancelled"),
        TaskStatus.REFUSED: gettext("refused by the worker"),
        TaskStatus.LOST: gettext("lost with its worker"),
    }
    return reasons.get(status, gettext("already ended"))


_RESTART = _Verb(
    one=_("Task “%(name)s” (%(id)s) was restarted; a new run is queued."),
    many=lambda n: ngettext("%(count)d task restarted", "%(count)d tasks restarted", n),
    reason=_restart_reason,
)
_CANCEL = _Verb(
    one=_("Task “%(name)s” (%(id)s) was cancelled."),
    many=lambda n: ngettext("%(count)d task cancelled", "%(count)d tasks cancelled", n),
    reason=_cancel_reason,
)

#: Names listed per skip reason in an action's message.
_NAMES_IN_MESSAGE = 5


def _summary(done: int, skipped: dict[str, list[Task]], verb: _Verb) -> str:
    parts = [verb.many(done) % {"count": done}]
    for reason, tasks in skipped.items():
        shown = ", ".join(f"{t.name} {short_id(t.pk)}" for t in tasks[:_NAMES_IN_MESSAGE])
        if len(tasks) > _NAMES_IN_MESSAGE:
            shown += " " + gettext("and %(count)d more") % {"count": len(tasks) - _NAMES_IN_MESSAGE}
        part = ngettext(
            "%(count)d skipped: %(reason)s (%(tasks)s)",
            "%(count)d skipped: %(reason)s (%(tasks)s)",
            len(tasks),
        ) % {"count": len(tasks), "reason": reason, "tasks": shown}
        parts.append(part)
    return "; ".join(parts) + "."


def _level(done: int, skipped: dict[str, list[Task]]) -> int:
    if not skipped:
        return messages.SUCCESS
    return messages.WARNING if done else messages.ERROR


# -- runs --------------------------------------------------------------------------------------


@admin.register(TaskRun)
class TaskRunAdmin(ScalableListMixin, ReadOnlyAdminMixin, RunDisplayMixin, admin.ModelAdmin):
    """Every run of every task, newest first."""

    list_display = (
        "id",
        "task_link",
        "attempt",
        "trigger",
        "status_badge",
        "triggered_by",
        "canceled_by",
        "queued",
        "started",
        "runtime_display",
        "worker",
        "outcome",
    )
    list_display_links = ("id",)
    list_filter = (StatusFilter, NameFilter, ("queued_at", admin.DateFieldListFilter))
    list_select_related = ("triggered_by", "canceled_by")
    list_defer = ("traceback",)
    date_hierarchy = "queued_at"
    search_fields = ("=id", "=broker_id", "=task__id")
    search_help_text = _("A run id, a task id, a broker (Celery) id, or part of a task name.")
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "task_link",
                    "attempt",
                    "trigger",
                    "status_badge",
                    "broker_id",
                    "retries",
                    "delivery",
                    "worker",
                    "triggered_by",
                    "canceled_by",
                )
            },
        ),
        (
            _("Timing"),
            {"fields": ("queued_at", "started_at", "finished_at", "runtime_display")},
        ),
        (_("Outcome"), {"fields": ("result_json", "error_text", "traceback_text")}),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        return _search(request, self.model, queryset, search_term), False

    @admin.display(description=_("task"), ordering="name")
    def task_link(self, run: TaskRun) -> SafeString:
        # The run carries its task's name: no join needed for the link.
        return format_html(
            '<a href="{}">{}</a> <span class="th-id">{}</span>',
            change_url(Task, run.task_id),
            run.name,
            short_id(run.task_id),
        )

    @admin.display(description=_("result"))
    def result_json(self, run: TaskRun) -> Any:
        return pretty_json(run.result)

    @admin.display(description=_("error"))
    def error_text(self, run: TaskRun) -> Any:
        return preformatted(run.error, "th-error")

    @admin.display(description=_("traceback"))
    def traceback_text(self, run: TaskRun) -> Any:
        return preformatted(run.traceback, "th-traceback")
