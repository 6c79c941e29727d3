"""Write-behind: events are buffered per process and written in batches by one thread."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_hub import flush
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.plugins.db import TaskDbPlugin
from django_tasks_hub.recorder.buffer import PENDING_BATCHES, WriteBuffer
from django_tasks_hub.recorder.rows import EventWriter
from testproject import tasks
from tests.conftest import Lifecycle, wait_for, wait_status


def lifecycle_events(count: int) -> list[TaskEvent]:
    """The publish, start and success of ``count`` tasks, in the order a busy worker sends
    them: every publish, then every start and end."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    common = {"name": tasks.add.name, "args": (1, 2), "kwargs": {}}
    queued = [
        TaskEvent(kind="queued", broker_id=i, timestamp=timezone.now(), **common) for i in ids
    ]
    ran = []
    for i in ids:
        ran.append(TaskEvent("started", i, timestamp=timezone.now(), worker="w@h", **common))
        ran.append(
            TaskEvent("succeeded", i, timestamp=timezone.now(), worker="w@h", result=3, **common)
        )
    return queued + ran


def batch_items(plugin: TaskDbPlugin, events: list[TaskEvent]) -> list[Any]:
    """The events the plugin's buffer would hold for ``events``."""
    kept: list[Any] = []

    class Collect:
        def add(self, item: Any) -> bool:
            kept.append(item)
            return True

    plugin.recorder._buffer = Collect()  # type: ignore[assignment]
    for event in events:
        plugin.dispatch(event)
    return kept


@contextmanager
def statements_sent() -> Iterator[list[tuple[str, Any]]]:
    """The statements sent in the block, with their parameters, as the driver gets them."""
    sent: list[tuple[str, Any]] = []

    def keep(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        yield sent


def test_a_batch_of_lifecycles_is_a_few_statements(db: Any, settings: Any) -> None:
    settings.TASKS_HUB = {"WRITE_BEHIND": True}
    plugin = TaskDbPlugin()
    items = batch_items(plugin, lifecycle_events(100))
    assert len(items) == 300
    with CaptureQueriesContext(connection) as queries:
        plugin.recorder.write_batch(items)
    # One event at a time, this is 300 events of 2-4 statements each. Set-based: an INSERT
    # per table for the publishes (SQLite splits long INSERTs), one UPDATE per table for the
    # starts and ends, and the savepoints around each group.
    sqls = [q["sql"][:60] for q in queries]
    assert len(queries) <= 20, sqls
    # Each task's start and end, in one batch, are one move: one UPDATE per table for all
    # (one statement over arrays on PostgreSQL, an executemany of 100 elsewhere).
    updates = [q["sql"] for q in queries if "UPDATE" in q["sql"][:60]]
    assert len(updates) == 2, sqls
    assert all(sql.startswith("100 times") or "unnest" in sql for sql in updates), sqls
    assert Task.objects.filter(status="done", result=3, worker="w@h").count() == 100
    runs = TaskRun.objects.filter(status="done", attempt=1, trigger="initial")
    assert runs.exclude(started_at=None).exclude(finished_at=None).count() == 100


@pytest.mark.postgres
def test_a_batch_finds_its_runs_by_their_key_not_by_their_status(db: Any, settings: Any) -> None:
    """The run UPDATE must not read the status index: every move leaves an entry behind in it
    until a vacuum, so a status few live rows have can have thousands of entries, each a heap
    page to visit. With most runs ended, the statistics make that index look like the
    cheapest way to a pending run, unless the status test is kept out of its reach."""
    from django_tasks_hub.recorder.writer import _unprepared_cursor_class

    settings.TASKS_HUB = {"WRITE_BEHIND": True}
    plugin = TaskDbPlugin()
    plugin.recorder.write_batch(batch_items(plugin, lifecycle_events(500)))
    events = lifecycle_events(12)
    plugin.recorder.write_batch(batch_items(plugin, events[:12]))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskRun._meta.db_table}")
    with statements_sent() as statements:
        plugin.recorder.write_batch(batch_items(plugin, events[12:]))
    assert TaskRun.objects.filter(status="done").count() == 512
    run_update = [s for s in statements if s[0].startswith(f'UPDATE "{TaskRun._meta.db_table}"')]
    assert len(run_update) == 1, [s[0][:60] for s in statements]
    sql, params = run_update[0]
    with transaction.atomic():
        raw = _unprepared_cursor_class()(connection.connection)
        raw.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in raw.fetchall())
    assert "th_run_status_idx" not in plan, plan
    assert "th_run_attempt_uniq" in plan, plan


@pytest.mark.postgres
def test_values_every_row_of_a_batch_shares_are_bound_once(db: Any, settings: Any) -> None:
    settings.TASKS_HUB = {"WRITE_BEHIND": True}
    plugin = TaskDbPlugin()
    events = lifecycle_events(20)
    # One task of another name, run on another worker: those columns vary, the rest do not.
    events[0] = replace(events[0], name="tests.other")
    events[21] = replace(events[21], name="tests.other", worker="other@h")
    events[20] = replace(events[20], name="tests.other", worker="other@h")
    with statements_sent() as sent:
        plugin.recorder.write_batch(batch_items(plugin, events))
    statements = [(sql, params) for sql, params in sent if params]  # Not savepoints.
    assert len(statements) == 4, [sql[:60] for sql, _ in statements]
    for sql, params in statements:
        arrays = [p for p in params if isinstance(p, list)]
        # The status, the retry count, the empty error... once each; ids and times as arrays.
        assert 2 <= len(arrays) < len(params) - 3, sql
        assert all(len(a) == 20 for a in arrays), sql
    # JSON too, as its text: the empty kwargs of every publish, once.
    assert "{}" in [p for p in statements[0][1] if not isinstance(p, list)]
    by_id = {e.broker_id: e for e in events[:20]}
    for task in Task.objects.all():
        assert (task.name, task.status, task.result) == (by_id[task.broker_id].name, "done", 3)
        expected = "other@h" if task.broker_id == events[0].broker_id else "w@h"
        assert task.worker == expected
        run = task.runs.get()
        assert (run.name, run.worker, run.status, run.attempt) == (task.name, expected, "done", 1)
    assert Task.objects.count() == 20


def test_publishes_written_after_their_tasks_ran_fill_in_set_based(db: Any, settings: Any) -> None:
    """A publisher whose batches lag behind the worker (the worker's events created the rows)
    still writes a batch in a few statements, not event by event."""
    settings.TASKS_HUB = {"WRITE_BEHIND": True}
    plugin = TaskDbPlugin()
    events = lifecycle_events(50)
    queued, ran = events[:50], events[50:]
    plugin.recorder.write_batch(batch_items(plugin, ran))
    assert Task.objects.filter(status="done", options={}).count() == 50
    publishes = [replace(e, options={"queue": "reports"}) for e in queued]
    with CaptureQueriesContext(connection) as queries:
        plugin.recorder.write_batch(batch_items(plugin, publishes))
    assert len(queries) <= 10, [q["sql"][:60] for q in queries]
    # What the publish knows best is there; the worker's outcome is untouched.
    tasks = Task.objects.filter(status="done", options={"queue": "reports"}, result=3)
    assert tasks.count() == 50
    published = {e.broker_id: e.timestamp for e in queued}  # Before each start.
    assert {t.broker_id: t.created_at for t in tasks} == published
    runs = TaskRun.objects.filter(status="done")
    assert dict(runs.values_list("broker_id", "queued_at")) == published


def test_a_worker_batch_of_tasks_no_publish_recorded_creates_them_set_based(
    db: Any, settings: Any
) -> None:
    """The worker's batch comes before the publisher's (or the publisher is not recorded):
    rule 2, the first event creates the rows, still in a few statements."""
    settings.TASKS_HUB = {"WRITE_BEHIND": True}
    plugin = TaskDbPlugin()
    ran = lifecycle_events(50)[50:]
    with CaptureQueriesContext(connection) as queries:
        plugin.recorder.write_batch(batch_items(plugin, ran))
    assert len(queries) <= 12, [q["sql"][:60] for q in queries]
    starts = {e.broker_id: e.timestamp for e in ran if e.kind == "started"}
    tasks = Task.objects.filter(status="done", result=3, attempts=1)
    assert {t.broker_id: t.created_at for t in tasks} == starts
    runs = TaskRun.objects.filter(status="done", attempt=1, trigger="initial")
    assert dict(runs.values_list("broker_id", "queued_at")) == starts


def test_a_batch_that_fails_is_written_event_by_event(
    db: Any, settings: Any, caplog: Any, monkeypatch: Any
) -> None:
    def broken_progress(self: EventWriter, event: TaskEvent) -> None:
        raise RuntimeError("progress column is gone")

    monkeypatch.setattr(EventWriter, "record_progress", broken_progress)
    settings.TASKS_HUB = {"WRITE_BEHIND": True, "WRITE_RETRIES": 0}
    plugin = TaskDbPlugin()
    events = lifecycle_events(3)
    progress = TaskEvent("progress", events[0].broker_id, tasks.add.name, timezone.now())
    items = batch_items(plugin, [*events, progress])
    with caplog.at_level(logging.WARNING, logger="django_tasks_hub"):
        plugin.recorder.write_batch(items)
    assert "could not write 1 of a batch of 10 events" in caplog.text
    # The one bad event cost nothing of the others: each was written again on its own.
    assert Task.objects.filter(status="done").count() == 3
    assert "gave up recording progress" in caplog.text


@pytest.mark.worker
def test_apply_async_returns_before_the_row_is_written(
    transactional_db: Any, settings: Any
) -> None:
    """The publish costs an append; the row appears with the next batch (or ``flush()``)."""
    settings.TASKS_HUB = {"WRITE_BEHIND": True, "FLUSH_INTERVAL": 30}
    life = Lifecycle(tasks.add)
    life.publish()  # The real before_task_publish receiver, as apply_async sends it.
    assert not Task.objects.filter(pk=life.id).exists()
    assert flush(timeout=10)
    task = Task.objects.get(pk=life.id)
    assert (task.status, task.args, task.attempts) == ("pending", [2, 3], 1)


@pytest.mark.worker
def test_the_writer_thread_writes_once_the_interval_is_over(
    transactional_db: Any, settings: Any
) -> None:
    settings.TASKS_HUB = {"WRITE_BEHIND": True, "FLUSH_INTERVAL": 0.2}
    life = Lifecycle(tasks.add)
    life.publish()
    life.start()
    life.succeed()
    # No flush(): the writer thread writes the batch on its own.
    wait_status(life.id, "done", timeout=10)


@pytest.mark.worker
def test_a_prefork_process_writes_its_buffer_when_it_exits(subprocess_worker: Any) -> None:
    """A pool process ends with ``os._exit`` (no atexit): its shutdown signal flushes."""
    queue = "write-behind-exit"
    env = {"TASKS_HUB_JSON": json.dumps({"WRITE_BEHIND": True, "FLUSH_INTERVAL": 120})}
    worker = subprocess_worker(
        "-P", "prefork", "-c", "1", "-Q", queue, "-n", f"{queue}@%h", env=env
    )
    results = [tasks.add.apply_async((i, i), queue=queue) for i in range(3)]
    wait_for(
        lambda: worker.output().count("succeeded in") >= 3, 30, what="the worker to run the tasks"
    )
    # Ran, but the worker's batch waits for its 120 s interval.
    # This test's tasks only: an earlier test's killed worker may leave a journal to replay.
    mine = Task.objects.filter(broker_id__in=[r.id for r in results])
    assert set(mine.values_list("status", flat=True)) == {"pending"}
    worker.stop()
    for i, result in enumerate(results):
        assert wait_status(result.id, "done", timeout=20).result == i * 2


def test_a_buffer_the_writer_cannot_keep_up_with_stops_growing(settings: Any) -> None:
    """When the database falls behind, add() waits for the writer: memory stays bounded."""
    settings.TASKS_HUB = {"FLUSH_MAX_EVENTS": 2, "FLUSH_INTERVAL": 0}
    release = threading.Event()
    written: list[int] = []

    def slow_sink(batch: list[int]) -> None:
        release.wait(10)
        written.extend(batch)

    buffer: WriteBuffer[int] = WriteBuffer(slow_sink)
    producer = threading.Thread(target=lambda: [buffer.add(i) for i in range(100)])
    producer.start()
    producer.join(1.0)
    # One batch is with the stuck writer; at most PENDING_BATCHES full batches wait.
    assert producer.is_alive()
    assert buffer.pending() <= 2 * PENDING_BATCHES + 1
    release.set()
    producer.join(10)
    assert buffer.flush(timeout=10)
    assert written == list(range(100))
