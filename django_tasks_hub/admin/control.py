"""The workers and queues pages: what the workers answer, the brokers' queues, and controls."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _t
from django.views.decorators.http import require_POST

from django_tasks_hub import control
from django_tasks_hub.admin.options import PageAdminMixin
from django_tasks_hub.exceptions import TaskHubError

#: The permission each control needs (``Meta.permissions`` of Worker and QueuePause).
WORKER_CONTROLS = {
    "grow": "django_tasks_hub.resize_worker_pool",
    "shrink": "django_tasks_hub.resize_worker_pool",
    "shutdown": "django_tasks_hub.shutdown_worker",
}
QUEUE_CONTROLS = {
    "pause": "django_tasks_hub.pause_queue",
    "resume": "django_tasks_hub.pause_queue",
}


class ControlPageAdmin(PageAdminMixin, admin.ModelAdmin):
    """A model whose admin is one page (``page``), with POST controls; nothing is edited."""

    #: The page's name: its URL name is ``<app_label>_<page>``.
    page = ""
    template = ""
    controls: dict[str, str] = {}

    class Media:
        css = {"all": ("django_tasks_hub/admin.css",)}

    def get_urls(self) -> list[Any]:
        label = self.opts.app_label
        page = self.admin_site.admin_view(self.page_view)
        return [
            path("", page, name=f"{label}_{self.page}"),
            # The app index links to the changelist: it is the same page.
            path("", page, name=f"{label}_{self.opts.model_name}_changelist"),
            path(
                "<str:key>/<str:op>/",
                self.admin_site.admin_view(require_POST(self.control_view)),
                name=f"{label}_{self.page}_control",
            ),
        ]

    def page_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.page}")

    def allowed(self, request: HttpRequest) -> dict[str, bool]:
        """Which controls the user may use, by name."""
        return {op: request.user.has_perm(perm) for op, perm in self.controls.items()}

    def rows(self) -> list[Any]:
        raise NotImplementedError

    def run_control(self, request: HttpRequest, key: str, op: str) -> str:
        raise NotImplementedError

    def page_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        error = ""
        try:
            rows = self.rows()
        except TaskHubError as exc:
            rows, error = [], exc.message
        context = {
            **self.admin_site.each_context(request),
            "title": str(self.opts.verbose_name_plural).capitalize(),
            "opts": self.opts,
            "rows": rows,
            "error": error,
            "allowed": self.allowed(request),
            "control_url": reverse(
                f"admin:{self.opts.app_label}_{self.page}_control", args=["KEY", "OP"]
            ),
            "media": self.media,
        }
        response = TemplateResponse(request, self.template, context)
        if error:
            response.status_code = 503
        return response

    def control_view(self, request: HttpRequest, key: str, op: str) -> HttpResponse:
        perm = self.controls.get(op)
        if perm is None:
            raise PermissionDenied
        if not request.user.has_perm(perm):
            raise PermissionDenied
        try:
            done = self.run_control(request, key, op)
        except TaskHubError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(self.page_url())


class WorkerAdmin(ControlPageAdmin):
    """The workers page: every worker that answers, and those that stopped answering."""

    page = "workers"
    template = "admin/django_tasks_hub/workers.html"
    controls = WORKER_CONTROLS

    def rows(self) -> list[Any]:
        return control.workers()

    def run_control(self, request: HttpRequest, key: str, op: str) -> str:
        if op == "shutdown":
            control.shutdown_worker(key)
            return _t("%(worker)s was asked to shut down: it ends what it runs, then exits.") % {
                "worker": key
            }
        control.resize_pool(key, 1 if op == "grow" else -1)
        return _t("The pool of %(worker)s will %(op)s by one process.") % {
            "worker": key,
            "op": _t("grow") if op == "grow" else _t("shrink"),
        }


class QueueAdmin(ControlPageAdmin):
    """The queues page: depth, oldest age and consumers of each queue; pause and resume."""

    page = "queues"
    template = "admin/django_tasks_hub/queues.html"
    controls = QUEUE_CONTROLS

    def rows(self) -> list[Any]:
        return control.queues()

    def run_control(self, request: HttpRequest, key: str, op: str) -> str:
        if op == "resume":
            workers = control.resume_queue(key)
            return _t("%(queue)s is resumed on %(workers)s.") % {
                "queue": key,
                "workers": ", ".join(workers) or _t("no worker (none of its workers answers)"),
            }
        pause = control.pause_queue(key, request.user)
        message = _t("%(queue)s is paused: no worker takes its tasks until it is resumed.") % {
            "queue": key
        }
        if pause.prefetched:
            message += " " + _t(
                "%(n)d task(s) the workers had already prefetched from it still start."
            ) % {"n": pause.prefetched}
        return message
