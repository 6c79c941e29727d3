"""Restart and cancel in the admin: the page buttons, the list actions and their messages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from django_tasks_hub import services
from django_tasks_hub.admin.display import change_url, short_id
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    DatabaseUnavailable,
    TaskHubError,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)
from django_tasks_hub.models import Task
from django_tasks_hub.states import TaskStatus

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin
else:
    _ModelAdmin = object


class TaskActionsMixin(_ModelAdmin):
    """Restart and Cancel on a task page and as list actions, each behind its own permission."""

    #: Most tasks one Restart or Cancel action goes through.
    action_limit = 1000

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

    # -- the page's buttons ------------------------------------------------------------------

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
        return HttpResponseRedirect(self._next(request) or change_url(task, task.pk))

    def _next(self, request: HttpRequest) -> str | None:
        """The page a button asked to come back to (``?next=``; RelatedTasksInline), if safe."""
        target = request.GET.get("next") or ""
        safe = url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        return target if target and safe else None

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
        done: list[Any] = []
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
            except (BrokerUnavailable, DatabaseUnavailable) as exc:
                # The broker or the database is down: every further task would wait for it.
                reason = (
                    gettext("the broker could not be reached")
                    if isinstance(exc, BrokerUnavailable)
                    else gettext("the database could not be written")
                )
                skipped[reason].append(task)
                for rest in tasks:
                    skipped[gettext("not tried after that")].append(rest)
                break
            else:
                done.append(task.pk)
        summary = _summary(len(done), skipped, verb)
        if done and len(done) <= _LINKED_IN_MESSAGE:
            # The tasks it changed, one click away: a restarted task keeps its place in the
            # list (its creation time), which may be pages down.
            opts = self.model._meta
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            ids = ",".join(str(pk) for pk in done)
            summary = format_html(
                '{} <a href="{}?id__in={}">{}</a>',
                summary,
                url,
                ids,
                ngettext("See it in the list.", "See them in the list.", len(done)),
            )
        self.message_user(request, summary, _level(len(done), skipped))


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


#: Most changed tasks an action's message links to (their ids go in the link's query).
_LINKED_IN_MESSAGE = 100


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
