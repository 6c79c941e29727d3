"""The plugin interface: one hook per lifecycle event, the registry, and ``get_db_plugin()``."""

from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.states import TaskStatus

if TYPE_CHECKING:
    from django_tasks_hub.plugins.db import TaskDbPlugin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskEvent:
    """One lifecycle transition of one attempt, as the Celery signals report it.

    ``retries`` is ``None`` when the signal does not say which attempt it is about (a worker
    lost mid-run): the event then applies to whichever attempt of ``broker_id`` is still open.
    """

    kind: str
    broker_id: str
    name: str
    timestamp: datetime.datetime
    retries: int | None = 0
    args: Any = None
    kwargs: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    root_id: str | None = None
    tags: tuple[str, ...] = ()
    worker: str = ""
    eager: bool = False
    result: Any = None
    error: str = ""
    traceback: str = ""
    runtime: float | None = None
    user_id: Any = None
    progress: dict[str, Any] | None = None
    redelivered: bool = False

    #: The status each kind leads to.
    STATUS: ClassVar[dict[str, str]] = {
        "queued": TaskStatus.PENDING,
        "started": TaskStatus.PROCESSING,
        "retried": TaskStatus.RETRYING,
        "succeeded": TaskStatus.DONE,
        "failed": TaskStatus.FAILED,
        "canceled": TaskStatus.CANCELED,
        "refused": TaskStatus.REFUSED,
        "lost": TaskStatus.LOST,
    }

    @property
    def status(self) -> str:
        """The status this event moves the task and its run to (``progress`` moves none)."""
        return self.STATUS.get(self.kind, "")


class TaskHubPlugin:
    """Base class of plugins: override the hooks you need; each receives a :class:`TaskEvent`.

    Hooks run in the process that saw the signal (the publisher, the worker's pool child, or
    the worker's main process) and must not raise: an exception is logged and swallowed so a
    plugin can never fail a task. Keep them quick; hand slow work to a thread or a queue.
    """

    #: Unique name, used by :func:`get_plugin`.
    name: ClassVar[str] = "plugin"

    def on_queued(self, event: TaskEvent) -> None:
        """A message was published: the attempt waits in the broker."""

    def on_started(self, event: TaskEvent) -> None:
        """A worker started executing the attempt."""

    def on_retried(self, event: TaskEvent) -> None:
        """The attempt failed and asked for a retry; the next attempt is queued."""

    def on_succeeded(self, event: TaskEvent) -> None:
        """The attempt returned a result."""

    def on_failed(self, event: TaskEvent) -> None:
        """The attempt raised and will not be retried."""

    def on_canceled(self, event: TaskEvent) -> None:
        """The attempt was revoked."""

    def on_refused(self, event: TaskEvent) -> None:
        """The worker rejected the message or does not know the task name."""

    def on_lost(self, event: TaskEvent) -> None:
        """The worker died or vanished while running the attempt."""

    def on_progress(self, event: TaskEvent) -> None:
        """A running task reported progress (``event.progress``)."""

    def on_skipped(self, event: TaskEvent) -> None:
        """A worker runs a task tagged ``skip_db`` that its publisher, not knowing the tag
        (it published by name), recorded anyway: forget what was recorded."""

    def dispatch(self, event: TaskEvent) -> None:
        """Call the hook named after ``event.kind``."""
        getattr(self, f"on_{event.kind}")(event)


class PluginRegistry:
    """The plugins listed in ``TASKS_HUB["PLUGINS"]``, built once per process."""

    def __init__(self) -> None:
        self._plugins: list[TaskHubPlugin] | None = None
        self._lock = threading.Lock()
        # A prefork worker forks a new pool process while its background thread may be
        # building the plugins under this lock: the child would inherit it held, and hang on
        # its first task. Each child starts with a lock of its own.
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    @property
    def plugins(self) -> list[TaskHubPlugin]:
        if self._plugins is None:
            with self._lock:
                if self._plugins is None:
                    self._plugins = [self._build(path) for path in hub_settings.PLUGINS]
        return self._plugins

    @staticmethod
    def _build(path: str | type[TaskHubPlugin]) -> TaskHubPlugin:
        cls = import_string(path) if isinstance(path, str) else path
        if not (isinstance(cls, type) and issubclass(cls, TaskHubPlugin)):
            raise ImproperlyConfigured(
                f"TASKS_HUB['PLUGINS'] entry {path!r} is not a TaskHubPlugin subclass."
            )
        return cls()

    def reset(self) -> None:
        """Forget the plugins; the next event builds them from the settings again."""
        with self._lock:
            self._plugins = None

    def emit(self, event: TaskEvent) -> None:
        """Hand ``event`` to every plugin; a failing plugin is logged and the rest still run."""
        for plugin in self.plugins:
            try:
                plugin.dispatch(event)
            except Exception:
                logger.exception(
                    "tasks-hub plugin %s failed on %s of %s[%s]",
                    plugin.name,
                    event.kind,
                    event.name,
                    event.broker_id,
                )


registry = PluginRegistry()


def get_plugin(name: str) -> TaskHubPlugin:
    """Return the registered plugin called ``name``; ``LookupError`` when there is none."""
    for plugin in registry.plugins:
        if plugin.name == name:
            return plugin
    raise LookupError(f"No tasks-hub plugin named {name!r} is registered in TASKS_HUB['PLUGINS'].")


def get_db_plugin() -> TaskDbPlugin:
    """Return the registered database plugin, the one that answers ``get_history()``."""
    from django_tasks_hub.plugins.db import TaskDbPlugin

    for plugin in registry.plugins:
        if isinstance(plugin, TaskDbPlugin):
            return plugin
    raise LookupError(
        "The database plugin is not registered: add "
        "'django_tasks_hub.plugins.db.TaskDbPlugin' to TASKS_HUB['PLUGINS']."
    )
