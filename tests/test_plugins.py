"""Plugins: every lifecycle event reaches every plugin listed in TASKS_HUB["PLUGINS"]."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_hub import TaskHubPlugin, get_db_plugin
from django_tasks_hub.plugins.base import TaskEvent, get_plugin, registry
from django_tasks_hub.plugins.db import TaskDbPlugin
from testproject import tasks
from testproject.celery import app as celery_app
from tests.conftest import wait_for, wait_status

DB = "django_tasks_hub.plugins.db.TaskDbPlugin"


class RecordingPlugin(TaskHubPlugin):
    """Notes each hook it is called with, by broker id."""

    name: ClassVar[str] = "recording"
    seen: ClassVar[dict[str, list[tuple[str, int | None]]]] = {}
    lock = threading.Lock()

    def note(self, event: TaskEvent) -> None:
        with self.lock:
            self.seen.setdefault(event.broker_id, []).append((event.kind, event.retries))

    def on_queued(self, event: TaskEvent) -> None:
        self.note(event)

    def on_started(self, event: TaskEvent) -> None:
        self.note(event)

    def on_retried(self, event: TaskEvent) -> None:
        self.note(event)

    def on_succeeded(self, event: TaskEvent) -> None:
        self.note(event)

    def on_failed(self, event: TaskEvent) -> None:
        self.note(event)

    def on_canceled(self, event: TaskEvent) -> None:
        self.note(event)

    def on_refused(self, event: TaskEvent) -> None:
        self.note(event)

    def on_progress(self, event: TaskEvent) -> None:
        self.note(event)


class BrokenPlugin(TaskHubPlugin):
    """A plugin with a bug in one hook."""

    name: ClassVar[str] = "broken"

    def on_started(self, event: TaskEvent) -> None:
        raise RuntimeError("a bug in a plugin")


@pytest.fixture
def plugins() -> Iterator[dict[str, list[tuple[str, int | None]]]]:
    RecordingPlugin.seen = {}
    paths = [DB, "tests.test_plugins.RecordingPlugin", "tests.test_plugins.BrokenPlugin"]
    with override_settings(TASKS_HUB={"PLUGINS": paths}):
        yield RecordingPlugin.seen


def kinds(seen: dict[str, list[tuple[str, int | None]]], broker_id: str, count: int) -> Any:
    return wait_for(
        lambda: len(seen.get(broker_id, [])) >= count and seen[broker_id],
        what=f"{count} events of {broker_id}",
    )


@pytest.mark.worker
def test_every_hook_is_called_for_every_event(
    worker: Any, plugins: dict[str, list[tuple[str, int | None]]], caplog: Any
) -> None:
    done = tasks.add.delay(1, 2)
    failed = tasks.fail.delay()
    retried = tasks.flaky.delay(fail_times=1, countdown=0.1)
    progress = tasks.long_running.delay(2, 0.05)
    refused = celery_app.send_task("no.such.task")
    # The database plugin comes first and still records, though a later plugin raises.
    assert wait_status(done.id, "done").result == 3
    assert kinds(plugins, done.id, 3) == [("queued", 0), ("started", 0), ("succeeded", 0)]
    assert kinds(plugins, failed.id, 3) == [("queued", 0), ("started", 0), ("failed", 0)]
    assert kinds(plugins, retried.id, 6) == [
        ("queued", 0),
        ("started", 0),
        ("queued", 1),  # Task.retry() publishes the next attempt first...
        ("retried", 0),  # ...then reports the retry.
        ("started", 1),
        ("succeeded", 1),
    ]
    assert kinds(plugins, progress.id, 5) == [
        ("queued", 0),
        ("started", 0),
        ("progress", 0),
        ("progress", 0),
        ("succeeded", 0),
    ]
    # Sent from the worker's main process, through the background thread.
    assert kinds(plugins, refused.id, 2) == [("queued", 0), ("refused", 0)]
    assert wait_status(refused.id, "refused")
    assert "tasks-hub plugin broken failed on started of demo.add" in caplog.text


def test_settings_choose_the_plugins(db: Any) -> None:
    assert isinstance(get_db_plugin(), TaskDbPlugin) and get_plugin("db") is get_db_plugin()
    with override_settings(TASKS_HUB={"PLUGINS": ["tests.test_plugins.RecordingPlugin"]}):
        assert [p.name for p in registry.plugins] == ["recording"]
        with pytest.raises(LookupError, match=r"add 'django_tasks_hub\.plugins\.db\.TaskDbPlugin'"):
            get_db_plugin()
        with pytest.raises(LookupError, match="No tasks-hub plugin named 'db'"):
            get_plugin("db")
    # Back to the settings of the project: the registry was built again.
    assert [p.name for p in registry.plugins] == ["db"]


def test_a_plugin_that_is_not_a_plugin_is_refused(db: Any) -> None:
    with (
        override_settings(TASKS_HUB={"PLUGINS": ["django_tasks_hub.models.Task"]}),
        pytest.raises(ImproperlyConfigured, match="is not a TaskHubPlugin subclass"),
    ):
        registry.plugins  # noqa: B018


def test_a_subclass_of_the_database_plugin_is_the_database_plugin(db: Any) -> None:
    with override_settings(TASKS_HUB={"PLUGINS": ["tests.test_plugins.AuditedDbPlugin"]}):
        assert isinstance(get_db_plugin(), AuditedDbPlugin)


class AuditedDbPlugin(TaskDbPlugin):
    """A project's own database plugin, built on the shipped one."""

    name: ClassVar[str] = "audited-db"
