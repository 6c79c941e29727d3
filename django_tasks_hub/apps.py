"""App configuration: ready() connects the Celery receivers."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TasksHubConfig(AppConfig):
    name = "django_tasks_hub"
    label = "django_tasks_hub"
    verbose_name = _("Tasks hub")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_tasks_hub.plugins import celery as receivers

        receivers.connect()
