"""django-tasks-hub: a durable record of every Celery task, with restart and cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "HistoryPage",
    "HistoryQuery",
    "TaskHubPlugin",
    "flush",
    "get_db_plugin",
    "set_progress",
]

if TYPE_CHECKING:
    from django_tasks_hub.history import HistoryPage, HistoryQuery
    from django_tasks_hub.plugins.base import TaskHubPlugin
    from django_tasks_hub.plugins.db import get_db_plugin
    from django_tasks_hub.progress import set_progress
    from django_tasks_hub.recorder.buffer import flush


def __getattr__(name: str) -> Any:
    # Imported lazily so that ``import django_tasks_hub`` works before Django's
    # app registry is ready (settings files, Celery app modules).
    if name in ("HistoryPage", "HistoryQuery"):
        from django_tasks_hub import history

        return getattr(history, name)
    if name == "TaskHubPlugin":
        from django_tasks_hub.plugins.base import TaskHubPlugin

        return TaskHubPlugin
    if name == "get_db_plugin":
        from django_tasks_hub.plugins.db import get_db_plugin

        return get_db_plugin
    if name == "flush":
        from django_tasks_hub.recorder.buffer import flush

        return flush
    if name == "set_progress":
        from django_tasks_hub.progress import set_progress

        return set_progress
    raise AttributeError(f"module 'django_tasks_hub' has no attribute {name!r}")
