"""The schedules page: every periodic schedule, its runs and missed fire times; run now, enable
and disable for django-celery-beat's schedules, each behind its own permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext

from django_tasks_hub import services
from django_tasks_hub.admin.options import PageAdminMixin
from django_tasks_hub.exceptions import TaskHubError
from django_tasks_hub.models import Schedule, ScheduleSource
from django_tasks_hub.schedules import summaries

#: The permission each control needs (``Schedule.Meta.permissions``).
CONTROL_PERMISSIONS = {
    "run_now": "django_tasks_hub.run_schedule",
    "enable": "django_tasks_hub.enable_schedule",
    "disable": "django_tasks_hub.disable_schedule",
}


class ScheduleAdmin(PageAdminMixin, admin.ModelAdmin):
    """The schedules page (``admin:django_tasks_hub_schedules``) in place of a change list."""

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    def has_control_permission(self, request: HttpRequest, control: str) -> bool:
        """Whether the user may ``control`` (run_now, enable, disable) a schedule."""
        return bool(request.user.has_perm(CONTROL_PERMISSIONS[control]))

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.schedules_view), name="django_tasks_hub_schedules"),
            *(
                path(
                    f"<int:pk>/{control.replace('_', '-')}/",
                    view(self.control_view),
                    {"control": control},
                    name=f"django_tasks_hub_schedule_{control}",
                )
                for control in CONTROL_PERMISSIONS
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return self.schedules_view(request)

    def schedules_view(self, request: HttpRequest) -> HttpResponse:
        """Every schedule, those needing attention first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        allowed = {c: self.has_control_permission(request, c) for c in CONTROL_PERMISSIONS}
        found = summaries()
        rows: list[dict[str, Any]] = [
            {
                "summary": summary,
                "controllable": summary.schedule.source == ScheduleSource.DJANGO_CELERY_BEAT,
                "tasks_url": (
                    reverse("admin:django_tasks_hub_task_changelist") + f"?schedule={summary.name}"
                ),
                "last_task_url": (
                    reverse("admin:django_tasks_hub_task_change", args=[summary.last_task_id])
                    if summary.last_task_id
                    else ""
                ),
            }
            for summary in found
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Schedules"),
            "rows": rows,
            "allowed": allowed,
            "attention": sum(1 for summary in found if summary.needs_attention),
        }
        return TemplateResponse(request, "admin/django_tasks_hub/schedules.html", context)

    def control_view(self, request: HttpRequest, pk: int, control: str) -> HttpResponse:
        """Run now, enable or disable one schedule (POST)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_control_permission(request, control):
            raise PermissionDenied
        schedule = get_object_or_404(Schedule, pk=pk)
        try:
            if control == "run_now":
                services.run_schedule_now(schedule, user=request.user)
                done = gettext("Sent %(name)s now.")
            else:
                services.set_schedule_enabled(schedule, control == "enable")
                done = (
                    gettext("Enabled %(name)s.")
                    if control == "enable"
                    else gettext("Disabled %(name)s.")
                )
        except TaskHubError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, done % {"name": schedule.name}, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:django_tasks_hub_schedules"))


__all__ = ["CONTROL_PERMISSIONS", "ScheduleAdmin"]
