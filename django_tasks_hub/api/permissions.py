"""Who may read, restart and cancel: permission classes and the queryset scope, from settings."""

from __future__ import annotations

import hmac
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from django_tasks_hub.conf import hub_settings

#: The codenames of the model permissions restart and cancel need (``Meta.permissions``).
ACTION_CODENAMES = {"restart": "restart_task", "cancel": "cancel_task"}


#: The codenames of the model permissions "restart / cancel all matching" need on top.
BULK_CODENAMES = {"restart": "restart_matching", "cancel": "cancel_matching"}


def read_permission_classes() -> list[type[BasePermission]]:
    """The classes of ``TASKS_HUB["READ_PERMISSION_CLASSES"]``, read at request time."""
    return list(hub_settings.READ_PERMISSION_CLASSES)


def action_permission_classes() -> list[type[BasePermission]]:
    """The classes of ``TASKS_HUB["ACTION_PERMISSION_CLASSES"]``, read at request time."""
    return list(hub_settings.ACTION_PERMISSION_CLASSES)


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


class HasBulkActionPermission(BasePermission):
    """Restart or cancel all matching needs ``restart_matching`` or ``cancel_matching`` too."""

    message: Any = _("You do not have permission to restart or cancel all matching tasks.")

    def has_permission(self, request: Request, view: Any) -> bool:
        action = getattr(view, "bulk_action", None)
        if action is None:
            return True
        perm = f"django_tasks_hub.{BULK_CODENAMES[action]}"
        self.message = _("You need the %(perm)s permission to %(action)s all matching tasks.") % {
            "perm": perm,
            "action": action,
        }
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(perm))


def scope_queryset(queryset: QuerySet[Any], request: Request) -> QuerySet[Any]:
    """``queryset`` narrowed by ``TASKS_HUB["QUERYSET_SCOPE"]`` (unchanged when unset)."""
    scope = hub_settings.QUERYSET_SCOPE
    return queryset if not scope else scope(queryset, request)


#: The permission that reads the overview, the stats and the metrics.
VIEW_PERMISSION = "django_tasks_hub.view_task"


class HasViewPermission(BasePermission):
    """The user holds ``view_task``: the statistics cover every task, past any queryset scope."""

    message: Any = _("You need the django_tasks_hub.view_task permission to read the statistics.")

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(VIEW_PERMISSION))


def bearer_token_matches(request: Request, token: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant
    time); never when no token is set."""
    if not token:
        return False
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _sep, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), str(token))


class MetricsPermission(BasePermission):
    """``TASKS_HUB["METRICS_TOKEN"]`` as a bearer token, or a user with ``view_task``."""

    message: Any = _(
        "Send the token of TASKS_HUB['METRICS_TOKEN'] as 'Authorization: Bearer <token>', "
        "or sign in as a user with the django_tasks_hub.view_task permission."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        if bearer_token_matches(request, hub_settings.METRICS_TOKEN):
            return True
        return HasViewPermission().has_permission(request, view)
