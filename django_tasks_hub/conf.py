"""The one settings object: ``TASKS_HUB = {...}`` with documented defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: Every key of ``settings.TASKS_HUB`` with its default; docs/configuration.md documents each.
DEFAULTS: dict[str, Any] = {
    # Dotted paths of TaskHubPlugin classes; the database plugin records the rows.
    "PLUGINS": ["django_tasks_hub.plugins.db.TaskDbPlugin"],
    # A Celery task carrying this tag (``@app.task(tags=["skip_db"])``) is not recorded.
    "SKIP_DB_TAG": "skip_db",
    # Dotted path to the Celery app; ``None`` uses ``celery.current_app``.
    "CELERY_APP": None,
    # Signal sent to a running task's process when it is cancelled.
    "CANCEL_SIGNAL": "SIGTERM",
    # Bounded publish retries so a dead broker answers quickly instead of hanging a request.
    "PUBLISH_RETRY_POLICY": {
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },
    # Seconds to wait for the broker connection when restarting or cancelling.
    "BROKER_TIMEOUT": 3.0,
    # How often a failed database write from a receiver is tried again, and the first delay.
    "WRITE_RETRIES": 3,
    "WRITE_RETRY_DELAY": 0.5,
    # Write-behind (opt-in): receivers hand events to a per-process buffer that one thread
    # writes in set-based batches on a connection of its own, so a publish or a task never
    # waits for the database; a process that dies abruptly loses its last interval of events.
    # Off: each event is written in its signal, before ``apply_async`` returns.
    "WRITE_BEHIND": False,
    # Longest a buffered event waits before its batch is written, in seconds.
    "FLUSH_INTERVAL": 0.05,
    # A batch is written as soon as it holds this many events.
    "FLUSH_MAX_EVENTS": 1000,
    # Longest traceback and error text kept, in characters.
    "MAX_TRACEBACK_LENGTH": 20_000,
    # REST API.
    "LIST_DEFAULT_LIMIT": 50,
    "LIST_MAX_LIMIT": 500,
    "HISTORY_DEFAULT_LIMIT": 50,
    "HISTORY_MAX_LIMIT": 500,
    "READ_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Checked on restart and cancel on top of the read classes (model permissions by default).
    "ACTION_PERMISSION_CLASSES": ["django_tasks_hub.api.permissions.HasTaskActionPermission"],
    # The task list counts at most this many rows for its total (null above; 0: never count).
    "LIST_COUNT_MAX": 10_000,
    # Deepest offset the task list accepts: a deep offset makes the database walk every row.
    "LIST_MAX_OFFSET": 100_000,
    # Dotted path to ``callable(queryset, request) -> queryset`` limiting what a user sees.
    "QUERYSET_SCOPE": None,
    # Operations.
    "RECONCILE_GRACE_SECONDS": 300,
    "RETENTION_DAYS": 30,
    "PRUNE_BATCH_SIZE": 1000,
}


class TasksHubSettings:
    """Reads ``settings.TASKS_HUB`` lazily and forgets it when the setting changes."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._cache is None:
            value = getattr(settings, "TASKS_HUB", None) or {}
            unknown = set(value) - set(DEFAULTS)
            if unknown:
                from django.core.exceptions import ImproperlyConfigured

                raise ImproperlyConfigured(
                    f"Unknown TASKS_HUB setting(s): {', '.join(sorted(unknown))}. "
                    f"Valid keys are: {', '.join(sorted(DEFAULTS))}."
                )
            self._cache = dict(value)
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid TASKS_HUB setting: {name!r}")
        return self.user_settings.get(name, DEFAULTS[name])

    def reload(self) -> None:
        self._cache = None


hub_settings = TasksHubSettings()


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS_HUB":
        hub_settings.reload()
        from django_tasks_hub.plugins.base import registry

        registry.reset()
