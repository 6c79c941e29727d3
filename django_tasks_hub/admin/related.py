"""RelatedTasksInline: the tasks that ran for an object, on that object's own admin page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.contenttypes.admin import GenericTabularInline
from django.contrib.contenttypes.forms import BaseGenericInlineFormSet
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.admin.display import EMPTY, change_url, duration, short_id, short_time
from django_tasks_hub.admin.display import status_badge as badge
from django_tasks_hub.models import Task, TaskRelation

#: Tasks shown on an object's page, newest first; the rest are one click away in the list.
RELATED_TASKS_SHOWN = 20


class NewestRelatedFormSet(BaseGenericInlineFormSet):
    """The newest ``RELATED_TASKS_SHOWN`` tasks only: an object with years of tasks still opens."""

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_newest"):
            shown = getattr(self, "shown", RELATED_TASKS_SHOWN)
            self._newest = super().get_queryset().select_related("task").order_by("-id")[:shown]
        return self._newest


class RelatedTasksInline(GenericTabularInline):
    """The tasks linked to the object of a page, with their status, last run and controls.

    Add it to any ``ModelAdmin.inlines``; it reads the links ``services.submit(related=...)``
    and the ``tasks_hub_related`` declarations write. Restart and Cancel post to the task
    admin's buttons (the same permissions and services) and come back to this page.
    """

    model = TaskRelation
    ct_field = "content_type"
    ct_fk_field = "object_id"
    formset = NewestRelatedFormSet  # type: ignore[assignment]
    fields = ("task_link", "task_status", "last_run", "worker", "controls")
    readonly_fields = fields
    extra = 0
    can_delete = False
    classes = ("th-related",)
    verbose_name = _("task")
    verbose_name_plural = _("tasks for this object (newest first)")
    #: How many tasks are shown.
    shown = RELATED_TASKS_SHOWN

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.shown = self.shown  # type: ignore[attr-defined]
        self._request = request
        self._object = obj
        return formset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Who may see tasks sees the object's tasks; the object's own admin decides the rest.
        return request.user.has_perm("django_tasks_hub.view_task")

    def _task_admin(self) -> Any:
        return self.admin_site._registry.get(Task)

    @admin.display(description=_("task"))
    def task_link(self, link: TaskRelation) -> SafeString:
        task = link.task
        return format_html(
            '<a href="{}">{}</a> <span class="th-muted">{}</span>',
            change_url(Task, task.pk),
            task.name,
            short_id(task.pk),
        )

    @admin.display(description=_("status"))
    def task_status(self, link: TaskRelation) -> SafeString:
        return badge(link.task.status)

    @admin.display(description=_("last run"))
    def last_run(self, link: TaskRelation) -> SafeString | str:
        task = link.task
        if task.started_at is None:
            return format_html("{} {}", _("queued"), short_time(task.created_at))
        return format_html(
            '<a href="{}?task_id={}">#{}</a> {} · {}',
            reverse("admin:django_tasks_hub_taskrun_changelist"),
            task.pk,
            task.attempts,
            short_time(task.started_at),
            duration(task.runtime),
        )

    @admin.display(description=_("worker"))
    def worker(self, link: TaskRelation) -> str:
        return link.task.worker or EMPTY

    @admin.display(description=_("actions"))
    def controls(self, link: TaskRelation) -> SafeString | str:
        task_admin, request = self._task_admin(), getattr(self, "_request", None)
        if task_admin is None or request is None:
            return ""
        task = link.task
        back = request.get_full_path()
        # Buttons of the page's own form (a form cannot nest): ``formaction`` posts it, with
        # its CSRF token, to the task admin's Restart or Cancel, which come back here.
        if task.is_terminal and task_admin.has_restart_permission(request, task):
            url = reverse("admin:django_tasks_hub_task_restart", args=[task.pk])
            label, css = _("Restart"), "restart"
        elif task.is_active and task_admin.has_cancel_permission(request, task):
            url = reverse("admin:django_tasks_hub_task_cancel", args=[task.pk])
            label, css = _("Cancel"), "cancel"
        else:
            return ""
        return format_html(
            '<button type="submit" class="th-tool th-tool--{} th-inline-tool" formmethod="post" '
            'formaction="{}?next={}" formnovalidate>{}</button>',
            css,
            url,
            back,
            label,
        )
