"""The ModelAdmins: the task list and page, the run history, and the runs inline on a task page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.db.models.functions import Left
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_tasks_hub import control
from django_tasks_hub.admin.actions import TaskActionsMixin
from django_tasks_hub.admin.bulk import BulkActionsMixin
from django_tasks_hub.admin.changelist import ScalableListMixin
from django_tasks_hub.admin.display import (
    EMPTY,
    SHORT_RUN_SECONDS,
    OutcomeDisplayMixin,
    RunDisplayMixin,
    change_url,
    clipped,
    duration,
    error_line,
    full_time,
    pretty_json,
    run_runtime,
    short_id,
    short_time,
    status_badge,
)
from django_tasks_hub.admin.filters import NameFilter, StatusFilter, WarningFilter, search
from django_tasks_hub.admin.insights import insights_view
from django_tasks_hub.admin.views import overview_view
from django_tasks_hub.models import Schedule, Task, TaskRun
from django_tasks_hub.states import TaskStatus


def _knob(name: str) -> Any:
    """A public constant of ``django_tasks_hub.admin`` (``RUNS_SHOWN``...), read when it is used,
    so that a project (or a test) setting it on the package is heard."""
    from django_tasks_hub import admin as package

    return getattr(package, name)


class ReadOnlyAdminMixin:
    """Rows are written by the workers and the services only: view and delete, never edit."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PageAdminMixin(ReadOnlyAdminMixin):
    """A model whose admin is one page of its own (workers, queues, schedules): nothing is
    added, edited or deleted there; its controls are the page's own."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NewestRunsFormSet(BaseInlineFormSet):
    """The newest ``RUNS_SHOWN`` runs only: a task retried a thousand times still opens."""

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_newest"):
            self._newest = super().get_queryset()[: _knob("RUNS_SHOWN")]
        return self._newest


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


class TaskAdmin(
    ScalableListMixin,
    ReadOnlyAdminMixin,
    BulkActionsMixin,
    TaskActionsMixin,
    OutcomeDisplayMixin,
    admin.ModelAdmin,
):
    """The task list and the task page, with restart and cancel."""

    list_display = (
        "name",
        "status_progress",
        "attempts",
        "created",
        "started",
        "runtime_display",
        "worker_display",
        "error_summary",
    )
    list_filter = (
        StatusFilter,
        NameFilter,
        WarningFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    # ``options`` is read: it names the queue a pending task waits on (``status_badge``).
    list_defer = ("args", "kwargs", "tags", "result", "error", "traceback")
    date_hierarchy = "created_at"
    search_fields = ("=id", "=broker_id", "name")
    search_help_text = _(
        "A task id, a broker (Celery) id, part of a task name, or text in the error or the "
        "arguments (three characters or more)."
    )
    ordering = ("-created_at",)
    actions = ("restart_selected", "cancel_selected")
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
                    "warnings_display",
                )
            },
        ),
        (_("Outcome"), {"fields": ("result_json", "error_text", "traceback_text")}),
        (
            _("Timing"),
            {
                "fields": (
                    "created_time",
                    "updated_time",
                    "started_time",
                    "finished_time",
                    "runtime_display",
                )
            },
        ),
        (_("Call"), {"fields": ("args_json", "kwargs_json", "options_json")}),
        (
            _("Related"),
            {"fields": ("parent_link", "children_links", "runs_link", "schedule_link")},
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)
    #: The list and the page update themselves (static/django_tasks_hub/live.js).
    live_updates = True
    #: Milliseconds between two updates of a live page.
    live_interval = 2000

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}
        js = ("django_tasks_hub/live.js", "django_tasks_hub/confirm.js")

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Any) -> SafeString:
        """The status, flagged when the task waits on a queue that no worker consumes."""
        badge = status_badge(obj.status)
        if obj.status != TaskStatus.PENDING:
            return badge
        # Asked only for a pending row, and cached for a few seconds across pages.
        queue = control.unconsumed_queue(obj, control.consumed_queues())
        if queue is None:
            return badge
        return format_html(
            '{}<span class="th-note th-warn th-queue-flag" title="{}">{}</span>',
            badge,
            gettext("Tasks on this queue wait until a worker consumes it, or it is resumed."),
            gettext("no worker consumes %(queue)s") % {"queue": queue},
        )

    @admin.display(description=_("schedule"))
    def schedule_link(self, task: Task) -> Any:
        """The periodic schedule that sent the task, on the schedules page."""
        if not task.schedule:
            return EMPTY
        pk = Schedule.objects.filter(name=task.schedule).values_list("pk", flat=True).first()
        if pk is None:
            return task.schedule
        return format_html(
            '<a href="{}#schedule-{}">{}</a>',
            reverse("admin:django_tasks_hub_schedules"),
            pk,
            task.schedule,
        )

    def get_urls(self) -> list[Any]:
        # The app's own pages, before the model's ``<object_id>/`` catch-all.
        def view(func: Any) -> Any:
            return self.admin_site.admin_view(lambda request: func(self, request))

        return [
            path("overview/", view(overview_view), name="django_tasks_hub_overview"),
            *super().get_urls(),
        ]

    # -- list --------------------------------------------------------------------------------

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Restart and cancel first; Django's "Delete selected tasks" last, not the default
        # choice of the menu.
        actions = super().get_actions(request)
        delete = actions.pop("delete_selected", None)
        if delete is not None:
            actions["delete_selected"] = delete
        return actions

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # A title that says what the page is, not Django's "Select task to view".
        return super().changelist_view(request, {"title": _("Tasks"), **(extra_context or {})})

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The error's head only: the list defers the whole error, which may be long.
        return super().get_queryset(request).annotate(th_error_head=Left("error", 300))

    @admin.display(description=_("error"))
    def error_summary(self, task: Any) -> Any:
        return error_line(getattr(task, "th_error_head", None) or "", limit=70)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        return search(request, self.model, queryset, search_term), False

    @admin.display(description=_("status"), ordering="status")
    def status_progress(self, task: Task) -> SafeString:
        # The progress of a running task sits under its badge: a column of its own would be
        # empty on every row that is not running.
        bar = self.progress_bar(task)
        # The status with its flag for a task waiting on a queue no worker consumes.
        badge = self.status_badge(task)
        return format_html('{}<div class="th-progress-line">{}</div>', badge, bar) if bar else badge

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

    @admin.display(description=_("worker"), ordering="worker")
    def worker_display(self, task: Task) -> Any:
        return clipped(task.worker, "th-clip--worker")

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

    def _precise(self, task: Task) -> bool:
        runtime = task.runtime
        return runtime is not None and runtime < SHORT_RUN_SECONDS

    @admin.display(description=_("created at"))
    def created_time(self, task: Task) -> Any:
        return full_time(task.created_at, precise=self._precise(task))

    @admin.display(description=_("updated at"))
    def updated_time(self, task: Task) -> Any:
        return full_time(task.updated_at, precise=self._precise(task))

    @admin.display(description=_("started at"))
    def started_time(self, task: Task) -> Any:
        return full_time(task.started_at, precise=self._precise(task))

    @admin.display(description=_("finished at"))
    def finished_time(self, task: Task) -> Any:
        return full_time(task.finished_at, precise=self._precise(task))

    @admin.display(description=_("progress"))
    def progress_display(self, task: Task) -> Any:
        if not task.progress:
            return EMPTY
        progress = task.progress if isinstance(task.progress, dict) else {}
        current, total = progress.get("current"), progress.get("total")
        message = str(progress.get("message") or "")
        if isinstance(current, int | float) and isinstance(total, int | float):
            words = gettext("%(current)s of %(total)s") % {"current": current, "total": total}
        else:
            # Not the current/total shape set_progress() writes: show what the task stored.
            return pretty_json(task.progress)
        if message:
            words = f"{words}: {message}"
        bar = self.progress_bar(task)
        if bar:
            return format_html('{} <span class="th-progress__words">{}</span>', bar, words)
        # The task is no longer running: say where it stopped, not a bar that is gone.
        return gettext("stopped at %(progress)s") % {"progress": words}

    @admin.display(description=_("positional arguments"))
    def args_json(self, task: Task) -> Any:
        return pretty_json(task.args)

    @admin.display(description=_("keyword arguments"))
    def kwargs_json(self, task: Task) -> Any:
        return pretty_json(task.kwargs)

    @admin.display(description=_("options"))
    def options_json(self, task: Task) -> Any:
        return pretty_json(task.options)

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
            .values_list("pk", "name", "status")[: _knob("CHILDREN_SHOWN") + 1]
        )
        if not children:
            return EMPTY
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} <span class="th-id">{}</span></li>',
            (
                (change_url(task, pk), name, status_badge(status), short_id(pk))
                for pk, name, status in children[: _knob("CHILDREN_SHOWN")]
            ),
        )
        more: Any = ""
        if len(children) > _knob("CHILDREN_SHOWN"):
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


class TaskRunAdmin(ScalableListMixin, ReadOnlyAdminMixin, RunDisplayMixin, admin.ModelAdmin):
    """Every run of every task, newest first."""

    list_display = (
        "id",
        "task_link",
        "attempt_display",
        "status_badge",
        "queued",
        "started",
        "runtime_display",
        "worker_display",
        "outcome",
    )
    list_display_links = ("id",)
    list_filter = (StatusFilter, NameFilter, ("queued_at", admin.DateFieldListFilter))
    list_select_related = ("triggered_by", "canceled_by")
    list_defer = ("traceback",)
    date_hierarchy = "queued_at"
    search_fields = ("=id", "=broker_id", "=task__id")
    search_help_text = _(
        "A run id, a task id, a broker (Celery) id, part of a task name, or text in the error "
        "(three characters or more)."
    )
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
                    "release",
                    "warnings_display",
                )
            },
        ),
        (
            _("Timing"),
            {"fields": ("queued_time", "started_time", "finished_time", "runtime_display")},
        ),
        (
            _("Cost"),
            {"fields": ("db_queries", "db_time_display", "memory_growth_display")},
        ),
        (_("Outcome"), {"fields": ("result_json", "error_text", "traceback_text")}),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(lambda request: insights_view(self, request))
        return [
            path("insights/", view, name="django_tasks_hub_insights"),
            *super().get_urls(),
        ]

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    #: Lookups the overview's links use on top of the list filters.
    OVERVIEW_LOOKUPS = frozenset({"finished_at__gte", "finished_at__lt", "error__startswith"})

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if lookup in self.OVERVIEW_LOOKUPS:
            return True
        return super().lookup_allowed(lookup, value, request)  # type: ignore[arg-type]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        return search(request, self.model, queryset, search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        title = {"title": _("Task runs")}
        return super().changelist_view(request, {**title, **(extra_context or {})})

    def _precise(self, run: TaskRun) -> bool:
        runtime = run_runtime(run)
        return runtime is not None and runtime < SHORT_RUN_SECONDS

    @admin.display(description=_("queued at"))
    def queued_time(self, run: TaskRun) -> Any:
        return full_time(run.queued_at, precise=self._precise(run))

    @admin.display(description=_("started at"))
    def started_time(self, run: TaskRun) -> Any:
        return full_time(run.started_at, precise=self._precise(run))

    @admin.display(description=_("finished at"))
    def finished_time(self, run: TaskRun) -> Any:
        return full_time(run.finished_at, precise=self._precise(run))

    @admin.display(description=_("task"), ordering="name")
    def task_link(self, run: TaskRun) -> SafeString:
        # The run carries its task's name: no join needed for the link.
        return format_html(
            '<a href="{}">{}</a> <span class="th-id">{}</span>',
            change_url(Task, run.task_id),
            run.name,
            short_id(run.task_id),
        )
