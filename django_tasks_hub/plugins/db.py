"""TaskDbPlugin: records every lifecycle event into Task and TaskRun rows, and reads history."""

from __future__ import annotations

from typing import ClassVar

from django_tasks_hub.events import TaskEvent
from django_tasks_hub.history import HistoryPage, HistoryQuery, get_history
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.plugins.base import TaskHubPlugin, registry
from django_tasks_hub.recorder import Recorder

__all__ = ["TaskDbPlugin", "get_db_plugin"]


class TaskDbPlugin(TaskHubPlugin):
    """Records tasks and runs in the database (``django_tasks_hub.recorder`` does the writing).

    Subclass it with other ``task_model`` and ``run_model`` to record into tables of your own.
    """

    name: ClassVar[str] = "db"
    task_model: ClassVar[type[Task]] = Task
    run_model: ClassVar[type[TaskRun]] = TaskRun

    def __init__(self) -> None:
        self.recorder = Recorder(self.task_model, self.run_model)

    def on_queued(self, event: TaskEvent) -> None:
        self.recorder.record(event)

    on_started = on_retried = on_succeeded = on_failed = on_queued
    on_canceled = on_refused = on_lost = on_progress = on_skipped = on_queued

    @property
    def db(self) -> str:
        """The database alias the plugin writes to."""
        return self.recorder.db

    def get_history(self, query: HistoryQuery) -> HistoryPage:
        """Return one page of runs, newest first; pass ``page.cursor`` back for the next."""
        return get_history(query, self.run_model.objects.using(self.db).all())


def get_db_plugin() -> TaskDbPlugin:
    """Return the registered database plugin, the one that answers ``get_history()``."""
    for plugin in registry.plugins:
        if isinstance(plugin, TaskDbPlugin):
            return plugin
    raise LookupError(
        "The database plugin is not registered: add "
        "'django_tasks_hub.plugins.db.TaskDbPlugin' to TASKS_HUB['PLUGINS']."
    )
