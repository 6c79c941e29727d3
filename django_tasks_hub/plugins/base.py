"""The plugin interface: one hook per lifecycle event, and the registry of the plugins."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.events import MissedFire, TaskEvent

__all__ = ["MissedFire", "PluginRegistry", "TaskEvent", "TaskHubPlugin", "get_plugin", "registry"]

logger = logging.getLogger(__name__)


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

    def on_missed(self, missed: MissedFire) -> None:
        """A schedule's fire time passed its grace with no run: beat was down, or late.

        Called once per missed fire time, in the process that ran the check
        (``tasks_hub reconcile``, or beat when ``SCHEDULE_CHECK_IN_BEAT_SECONDS`` is set).
        """

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
                    self._plugins = [self._build(cls) for cls in hub_settings.PLUGINS]
        return self._plugins

    @staticmethod
    def _build(cls: Any) -> TaskHubPlugin:
        if not (isinstance(cls, type) and issubclass(cls, TaskHubPlugin)):
            raise ImproperlyConfigured(
                f"TASKS_HUB['PLUGINS'] entry {cls!r} is not a TaskHubPlugin subclass."
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

    def emit_missed(self, missed: MissedFire) -> None:
        """Hand a missed fire time to every plugin's ``on_missed``; failures are logged."""
        for plugin in self.plugins:
            try:
                plugin.on_missed(missed)
            except Exception:
                logger.exception(
                    "tasks-hub plugin %s failed on the missed fire time %s of %s",
                    plugin.name,
                    missed.fire_at,
                    missed.schedule,
                )


registry = PluginRegistry()


def _reset_registry(*, setting: str, **kwargs: Any) -> None:
    # Another TASKS_HUB (a test's override_settings) may list other plugins.
    if setting == "TASKS_HUB":
        registry.reset()


setting_changed.connect(_reset_registry, dispatch_uid="tasks_hub.reset_registry")


def get_plugin(name: str) -> TaskHubPlugin:
    """Return the registered plugin called ``name``; ``LookupError`` when there is none."""
    for plugin in registry.plugins:
        if plugin.name == name:
            return plugin
    raise LookupError(f"No tasks-hub plugin named {name!r} is registered in TASKS_HUB['PLUGINS'].")
