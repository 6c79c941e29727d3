"""Who may read, restart and cancel: permission classes and the queryset scope, from settings."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from django_tasks_hub.conf import hub_settings

#: The codenames of the model permissions restart and cancel need (``Meta.permissions``).
ACTION_CODENAMES = {"restart": "restart_task", "cancel": "cancel_task"}


def _classes(paths: list[Any]) -> list[type[BasePermission]]:
    return [import_string(path) if isinstance(path, str) else path for path in paths]


def read_permission_classes() -> list[type[BasePermission]]:
    """The classes of ``TASKS_HUB["READ_PERMISSION_CLASSES"]``, resolved at request time."""
    return _classes(hub_settings.READ_PERMISSION_CLASSES)


def action_permission_classes() -> list[type[BasePermission]]:
    """The classes of ``TASKS_HUB["ACTION_PERMISSION_CLASSES"]``, resolved at request time."""
    return _classes(hub_settings.ACTION_PERMISSION_CLASSES)


def action_permission(model: Any, action: str) -> str:
    """The permission ``action`` (restart or cancel) needs on tasks of ``model``.

    A model that declares the codename itself (a subclass of ``AbstractTask`` whose Meta
    extends ``AbstractTask.Meta``) uses its own; one built on ``Task`` by multi-table
    inheritance uses ``django_tasks_hub``'s, as its rows are tasks too.
    """
    codename = ACTION_CODENAMES[action]
    opts = model._meta
    if any(name == codename for name, _label in opts.permissions):
        return f"{opts.app_label}.{codename}"
    return f"django_tasks_hub.{codename}"


class HasTaskActionPermission(BasePermission):
    """Restart needs ``restart_task``, cancel needs ``cancel_task``; reading needs neither."""

    message: Any = _("You do not have permission to restart or cancel tasks.")

    def has_permission(self, request: Request, view: Any) -> bool:
        action = getattr(view, "task_action", None)
        if action is None:
            return True
        perm = action_permission(view.queryset.model, action)
        self.message = _("You need the %(perm)s permission to %(action)s tasks.") % {
            "perm": perm,
            "action": action,
        }
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(perm))


def scope_queryset(queryset: QuerySet[Any], request: Request) -> QuerySet[Any]:
    """``queryset`` narrowed by ``TASKS_HUB["QUERYSET_SCOPE"]`` (unchanged when unset)."""
    path = hub_settings.QUERYSET_SCOPE
    if not path:
        return queryset
    scope = import_string(path) if isinstance(path, str) else path
    return scope(queryset, request)
