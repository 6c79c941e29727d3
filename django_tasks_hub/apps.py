"""App configuration: ready() connects the Celery receivers and the rollups' trigger check."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _ensure_rollup_triggers(sender: Any, using: str = "default", **_: Any) -> None:
    # A later migration that rebuilds a SQLite table drops the rollups' triggers with it.
    from django.db import connections

    from django_tasks_hub.insight import rollups

    rollups.ensure_triggers(connections[using])


class TasksHubConfig(AppConfig):
    name = "django_tasks_hub"
    label = "django_tasks_hub"
    verbose_name = _("Tasks hub")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: the receivers import the models.
        from django_tasks_hub import receivers

        receivers.connect()
        post_migrate.connect(
            _ensure_rollup_triggers, sender=self, dispatch_uid="tasks_hub.rollup_triggers"
        )
