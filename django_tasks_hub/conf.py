"""The one settings object: ``TASKS_HUB = {...}`` with documented defaults."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

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
    # Write-behind (the default): receivers append each event to the process's journal (a
    # local file) and hand it to a buffer that one thread writes in set-based batches on a
    # connection of its own, so a publish or a task never waits for the database, and a
    # process killed abruptly loses nothing (the next process replays its journal).
    # Off: each event is written in its signal, before ``apply_async`` returns.
    "WRITE_BEHIND": True,
    # Folder of the journals (a project and database each get a folder under it); ``None``:
    # ``<tempfile.gettempdir()>/django-tasks-hub``. In a container, a volume (see operations).
    "JOURNAL_DIR": None,
    # Most bytes one process's journal may hold (events not yet in the database, as during a
    # database outage); past it the process writes events in their signal, as without it.
    "JOURNAL_MAX_BYTES": 64 * 1024 * 1024,
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
    # Seconds the workers and queues pages (and their API) wait for the workers' answers.
    "INSPECT_TIMEOUT": 1.0,
    # A bearer token that lets a Prometheus scrape read ``GET metrics`` without a user
    # (``Authorization: Bearer <token>``); ``None``: a user with the view permission only.
    "METRICS_TOKEN": None,
    # Bulk by filter ("restart all matching"): at most this many tasks are done in the
    # request; a larger set runs in the background as a hub Celery task with a job record.
    "BULK_INLINE_MAX": 100,
    # Tasks a bulk job reads, claims and commits at a time.
    "BULK_CHUNK_SIZE": 100,
    # Seconds a bulk job's runner holds its lease without renewing it (it renews each chunk);
    # a job whose runner died can be resumed once its lease has run out.
    "BULK_LEASE_SECONDS": 120,
    # Insights (docs/insights.md). Record whether a task was sent from inside atomic() and how
    # that transaction ended, for the started_before_commit and rolled-back warnings.
    "TRANSACTION_CHECKS": True,
    # Count each attempt's SQL queries and time (every database) and its peak memory growth.
    "MEASURE_COST": True,
    # The release workers run (a git SHA, a version); None reads TASKS_HUB_RELEASE.
    "RELEASE": None,
    # Successes of the same task name and arguments closer than this count as duplicates.
    "DUPLICATE_WINDOW_SECONDS": 3600,
    # Operations.
    # Seconds a worker may stay silent (no heartbeat, no answer to a ping) before reconcile
    # takes it for gone and marks its runs lost; also how long a run a live worker no longer
    # runs may wait for its end to be written.
    "RECONCILE_GRACE_SECONDS": 20,
    # Seconds between two heartbeats of a worker (its ``Worker`` row's ``last_seen``), written
    # by a thread of the worker's main process; 0 turns the heartbeat off.
    "WORKER_HEARTBEAT_SECONDS": 5.0,
    "RETENTION_DAYS": 30,
    "PRUNE_BATCH_SIZE": 1000,
    # Periodic tasks (docs/periodic.md). How long after a fire time a run still serves it, in
    # seconds; ``None``: half the schedule's period, at most 5 minutes.
    "SCHEDULE_GRACE_SECONDS": None,
    # Per schedule, by name: ``{"nightly-export": 900}``; wins over SCHEDULE_GRACE_SECONDS.
    "SCHEDULE_GRACES": {},
    # How many of a schedule's latest runs its success rate and median runtime cover.
    "SCHEDULE_RECENT_RUNS": 20,
    # A schedule needs attention when it missed a fire time in this many seconds.
    "SCHEDULE_MISSED_WINDOW_SECONDS": 86_400,
    # Run the fire-time check inside ``celery beat`` every this many seconds (None: off; the
    # check then runs in ``tasks_hub reconcile``).
    "SCHEDULE_CHECK_IN_BEAT_SECONDS": None,
}

#: Settings that hold dotted paths (or lists of them): read as the objects they name, imported
#: once, when first read. A setting may also hold the object itself.
IMPORT_STRINGS: frozenset[str] = frozenset(
    {
        "PLUGINS",
        "CELERY_APP",
        "READ_PERMISSION_CLASSES",
        "ACTION_PERMISSION_CLASSES",
        "QUERYSET_SCOPE",
    }
)


def _resolve(name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_resolve(name, item) for item in value]
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"TASKS_HUB[{name!r}] names {value!r}, which could not be imported: {exc}"
        ) from exc


class TasksHubSettings:
    """Reads ``settings.TASKS_HUB`` lazily and forgets it when the setting changes.

    Nothing is read at import time, so ``override_settings(TASKS_HUB=...)`` works everywhere;
    the dotted paths of :data:`IMPORT_STRINGS` are resolved here and nowhere else.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._cache is None:
            value = getattr(settings, "TASKS_HUB", None) or {}
            unknown = set(value) - set(DEFAULTS)
            if unknown:
                raise ImproperlyConfigured(
                    f"Unknown TASKS_HUB setting(s): {', '.join(sorted(unknown))}. "
                    f"Valid keys are: {', '.join(sorted(DEFAULTS))}."
                )
            self._cache = dict(value)
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid TASKS_HUB setting: {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS:
            value = _resolve(name, value)
        # Kept on the instance (dotted paths resolved, once): the next read is a plain
        # attribute, not this method; the recorder and the schedule check read settings per
        # event and per schedule.
        self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self._cache = None
        for name in DEFAULTS:
            self.__dict__.pop(name, None)


hub_settings = TasksHubSettings()


def current_release() -> str:
    """The release this process runs: ``TASKS_HUB["RELEASE"]``, else ``$TASKS_HUB_RELEASE``."""
    value = hub_settings.RELEASE
    if value is None:
        value = os.environ.get("TASKS_HUB_RELEASE", "")
    return str(value)[:64]


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS_HUB":
        hub_settings.reload()
