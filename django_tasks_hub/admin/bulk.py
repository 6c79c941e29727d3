"""Restart or cancel all matching in the admin: the list's filters as a spec, the confirmation
page, and the bulk jobs' pages (progress, touched tasks, resume)."""

from __future__ import annotations

import contextlib
import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from django_tasks_hub import services
from django_tasks_hub.admin.display import EMPTY, change_url, short_id, short_time
from django_tasks_hub.exceptions import TaskHubError
from django_tasks_hub.models import BulkAction, BulkJob, BulkJobStatus, Task
from django_tasks_hub.states import ACTIVE_STATUSES, TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin
else:
    _ModelAdmin = object

#: The admin list's query parameters that only sort or page it: no effect on the set.
IGNORED_PARAMETERS = frozenset({"o", "p", "e", "_facets", "_to_field", "_popup"})
#: Tasks listed on a bulk job's page (the newest it touched).
ITEMS_SHOWN = 20


def _moment(value: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def spec_from_changelist(params: QueryDict) -> dict[str, Any]:
    """The task list's query string as a bulk filter spec; :class:`ValueError` names what
    cannot be one (a filter the spec does not know, a malformed date)."""
    spec: dict[str, Any] = {}
    status = params.get("status")
    if status == "active":
        spec["status"] = sorted(ACTIVE_STATUSES)
    elif status == "ended":
        spec["status"] = sorted(TERMINAL_STATUSES)
    elif status:
        spec["status"] = [status]
    for key, target in (
        ("name", "name"),
        ("q", "q"),
        ("parent__exact", "parent"),
        ("warning", "warning"),  # The list's transaction-warning filter (WarningFilter).
    ):
        value = str(params.get(key) or "").strip()
        if value:
            spec[target] = value
    try:
        for key, target in (
            ("created_at__gte", "created_after"),
            ("created_at__lt", "created_before"),
        ):
            if params.get(key):
                spec[target] = _moment(str(params.get(key))).isoformat()
        if params.get("created_at__year"):
            spec.update(_hierarchy_range(params))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(gettext("The dates of the list could not be read: %s") % exc) from exc
    known = {
        "status", "name", "q", "parent__exact", "created_at__gte", "created_at__lt",
        "created_at__year", "created_at__month", "created_at__day", *IGNORED_PARAMETERS,
    }  # fmt: skip
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            gettext("These filters cannot be used for all matching tasks: %(names)s.")
            % {"names": ", ".join(unknown)}
        )
    return spec


def _hierarchy_range(params: QueryDict) -> dict[str, str]:
    """The date hierarchy's year / month / day as a created range."""
    year = int(str(params.get("created_at__year")))
    month = int(str(params.get("created_at__month") or 0))
    day = int(str(params.get("created_at__day") or 0))
    if day:
        start = datetime.datetime(year, month, day)
        end = start + datetime.timedelta(days=1)
    elif month:
        start = datetime.datetime(year, month, 1)
        end = datetime.datetime(year + month // 12, month % 12 + 1, 1)
    else:
        start, end = datetime.datetime(year, 1, 1), datetime.datetime(year + 1, 1, 1)
    return {
        "created_after": timezone.make_aware(start).isoformat(),
        "created_before": timezone.make_aware(end).isoformat(),
    }


class BulkActionsMixin(_ModelAdmin):
    """ "Restart all matching" and "Cancel all matching" on the task list: a confirmation page
    with the count first, then a bulk job whose page shows its progress."""

    def has_bulk_permission(self, request: HttpRequest, action: str) -> bool:
        """Whether the user may restart (cancel) all matching: the one-by-one permission and
        ``restart_matching`` (``cancel_matching``)."""
        one = getattr(self, f"has_{action}_permission")(request)
        return bool(one and request.user.has_perm(f"django_tasks_hub.{action}_matching"))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        query = request.GET.urlencode()
        suffix = f"?{query}" if query else ""
        extra = {
            f"bulk_{action}_url": reverse(f"admin:django_tasks_hub_task_bulk_{action}") + suffix
            for action in BulkAction.values
            if self.has_bulk_permission(request, action)
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "bulk/restart/",
                wrap(self.bulk_view),
                {"action": BulkAction.RESTART},
                name="django_tasks_hub_task_bulk_restart",
            ),
            path(
                "bulk/cancel/",
                wrap(self.bulk_view),
                {"action": BulkAction.CANCEL},
                name="django_tasks_hub_task_bulk_cancel",
            ),
            *super().get_urls(),
        ]

    def bulk_view(self, request: HttpRequest, action: str) -> HttpResponse:
        """GET: what would be touched, and a button; POST: start the job, show its page."""
        if not self.has_bulk_permission(request, action):
            raise PermissionDenied
        # The confirmation form carries the list's query string in a hidden field.
        posted = request.method == "POST"
        params = QueryDict(request.POST.get("_filters", "")) if posted else request.GET
        list_url = reverse("admin:django_tasks_hub_task_changelist")
        back = f"{list_url}?{params.urlencode()}" if params else list_url
        try:
            spec = services.clean_bulk_filter(spec_from_changelist(params), all_tasks=True)
        except (ValueError, TaskHubError) as exc:
            self.message_user(request, str(getattr(exc, "message", exc)), messages.ERROR)
            return HttpResponseRedirect(back)
        description = services.describe_bulk_filter(spec)
        if posted:
            if not spec and request.POST.get("all") != "yes":
                self.message_user(
                    request,
                    gettext("Tick “every task” to act on every task, or filter the list first."),
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.get_full_path())
            try:
                job = services.start_bulk(
                    action, spec, request.user, all_tasks=True, description=description
                )
            except TaskHubError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(back)
            self.message_user(request, _started(job), messages.SUCCESS)
            return HttpResponseRedirect(
                reverse("admin:django_tasks_hub_bulkjob_change", args=[job.pk])
            )
        matching = Task.objects.matching(spec)
        total = matching.count()
        eligible = matching.filter(
            status__in=sorted(TERMINAL_STATUSES if action == "restart" else ACTIVE_STATUSES)
        ).count()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Restart all matching tasks")
            if action == "restart"
            else _("Cancel all matching tasks"),
            "opts": self.opts,
            "action": action,
            "description": description,
            "spec": spec,
            "total": total,
            "eligible": eligible,
            "others": total - eligible,
            "filters": params.urlencode(),
            "back_url": back,
            "inline_max": services.hub_settings.BULK_INLINE_MAX,
            "everything": not spec,
        }
        return TemplateResponse(
            request, "admin/django_tasks_hub/task/bulk_confirmation.html", context
        )


def _started(job: BulkJob) -> str:
    if job.status == BulkJobStatus.DONE:
        return gettext("Bulk job #%(id)s is done: %(changed)s changed, %(skipped)s skipped.") % {
            "id": job.pk,
            "changed": job.succeeded,
            "skipped": job.skipped,
        }
    return ngettext(
        "Bulk job #%(id)s is running in the background over %(count)s task.",
        "Bulk job #%(id)s is running in the background over %(count)s tasks.",
        job.total,
    ) % {"id": job.pk, "count": f"{job.total:,}"}


def job_badge(status: str) -> SafeString:
    """A coloured badge for a bulk job's status."""
    try:
        label: Any = BulkJobStatus(status).label
    except ValueError:
        label = status
    css = {"running": "processing", "pending": "pending", "done": "done", "failed": "failed"}
    return format_html(
        '<span class="th-badge th-badge--{}">{}</span>', css.get(status, "pending"), label
    )


class BulkJobAdmin(admin.ModelAdmin):
    """Bulk jobs: who asked for what, how far each is, and the tasks it touched."""

    list_display = (
        "id",
        "action",
        "status_badge",
        "description",
        "created_by",
        "progress",
        "succeeded",
        "skipped",
        "created",
        "finished",
    )
    list_display_links = ("id", "action")
    list_filter = ("action", "status")
    list_select_related = ("created_by",)
    list_per_page = 50
    show_full_result_count = False
    ordering = ("-id",)
    fields = (
        "id",
        "action",
        "status_badge",
        "description",
        "created_by",
        "background",
        "progress",
        "total",
        "processed",
        "succeeded",
        "skipped",
        "reasons",
        "error",
        "created_at",
        "started_at",
        "updated_at",
        "finished_at",
        "touched",
    )
    readonly_fields = fields
    #: The list and the page update themselves (static/django_tasks_hub/live.js).
    live_updates = True
    live_interval = 2000

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}
        js = ("django_tasks_hub/live.js",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/resume/",
                wrap(require_POST(self.resume_view)),
                name="django_tasks_hub_bulkjob_resume",
            ),
            *super().get_urls(),
        ]

    def can_resume(self, request: HttpRequest, job: BulkJob) -> bool:
        """Whether the job is stalled or failed and the user may run its action on all matching."""
        if not job.is_resumable:
            return False
        codenames = (f"{job.action}_task", f"{job.action}_matching")
        return request.user.has_perms([f"django_tasks_hub.{c}" for c in codenames])

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
            context.update(
                show_resume=self.can_resume(request, obj),
                resume_url=reverse("admin:django_tasks_hub_bulkjob_resume", args=[obj.pk]),
                live=not obj.is_finished,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Resume button of a stalled job's page."""
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise PermissionDenied
        if not self.can_resume(request, job):
            raise PermissionDenied
        try:
            services.resume_bulk(job, request.user)
        except TaskHubError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(
                request, gettext("Bulk job #%(id)s resumed.") % {"id": job.pk}, messages.SUCCESS
            )
        return HttpResponseRedirect(reverse("admin:django_tasks_hub_bulkjob_change", args=[job.pk]))

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, job: BulkJob) -> SafeString:
        badge = job_badge(job.status)
        if job.status == BulkJobStatus.RUNNING and job.is_stalled():
            return format_html(
                '{} <span class="th-missing">{}</span>', badge, gettext("stalled: no worker")
            )
        return badge

    @admin.display(description=_("progress"))
    def progress(self, job: BulkJob) -> SafeString:
        return format_html(
            '<span class="th-progress" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            'aria-valuenow="{}"><span class="th-progress__bar" style="width: {}%"></span></span>'
            ' <span class="th-progress__text th-bulk-progress">{}</span>',
            f"{job.percent:.0f}",
            f"{job.percent:.1f}",
            gettext("%(done)s of %(total)s") % {
                "done": f"{job.processed:,}", "total": f"{job.total:,}"
            },
        )  # fmt: skip

    @admin.display(description=_("skipped because"))
    def reasons(self, job: BulkJob) -> Any:
        if not job.skip_reasons:
            return EMPTY
        return format_html_join(
            ", ", "{}: {}", ((reason, count) for reason, count in job.skip_reasons.items())
        )

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, job: BulkJob) -> Any:
        return short_time(job.created_at)

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, job: BulkJob) -> Any:
        return short_time(job.finished_at)

    @admin.display(description=_("tasks touched"))
    def touched(self, job: BulkJob) -> Any:
        # The resolved ones: a claim still open is being worked on in the current chunk.
        items = list(job.items.exclude(outcome="").order_by("-id")[:ITEMS_SHOWN])
        if not items:
            return EMPTY
        names = dict(
            Task.objects.filter(pk__in=[i.task_id for i in items]).values_list("pk", "name")
        )
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> <span class="th-id">{}</span> {}</li>',
            (
                (
                    change_url(Task, item.task_id),
                    names.get(item.task_id, gettext("deleted")),
                    short_id(item.task_id),
                    _outcome(item.outcome, item.reason),
                )
                for item in items
            ),
        )
        more: Any = ""
        if job.processed > ITEMS_SHOWN:
            more = format_html(
                "<li>{}</li>",
                gettext("and %(count)s more") % {"count": f"{job.processed - ITEMS_SHOWN:,}"},
            )
        return format_html('<ul class="th-children th-touched">{}{}</ul>', rows, more)

    def get_queryset(self, request: HttpRequest) -> QuerySet[BulkJob]:
        return super().get_queryset(request).select_related("created_by")


def _outcome(outcome: str, reason: str) -> str:
    if outcome == "done":
        return gettext("changed")
    if outcome == "skipped":
        with contextlib.suppress(ValueError):
            reason = str(TaskStatus(reason).label).lower()
        return gettext("skipped: %(reason)s") % {"reason": reason}
    return gettext("claimed")
