"""The recorder: how the database plugin turns lifecycle events into task and run rows.

``Recorder.record(event)`` either writes the event at once (a batch of one) or appends it to
the process's journal (``journal``) and hands it to the write-behind buffer, whose thread
writes batches and deletes what is written. Either way the same code writes it:
``writer.BatchWriter`` for a batch, falling back to ``rows.EventWriter`` one event at a time,
both with the rule of ``transitions`` and the values of ``columns``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import connections, router

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.insight.cost import not_counted
from django_tasks_hub.locking import in_callers_atomic
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.recorder.background import background
from django_tasks_hub.recorder.buffer import WriteBuffer, writing_through
from django_tasks_hub.recorder.journal import Journal, Segment
from django_tasks_hub.recorder.rows import EventWriter
from django_tasks_hub.recorder.writer import (
    BatchWriter,
    drop_broken_connection,
    link_events,
    write_events,
)
from django_tasks_hub.threads import start_thread

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)


class Recorder:
    """Records events of ``task_model`` tasks and ``run_model`` runs; never raises into Celery.

    A write that fails (a database error, a lock) is logged and tried again on the background
    thread, ``WRITE_RETRIES`` times, with a growing delay.
    """

    def __init__(self, task_model: type[Task] = Task, run_model: type[TaskRun] = TaskRun) -> None:
        self.task_model = task_model
        self.run_model = run_model
        self.journal = Journal(
            {"task": task_model._meta.label, "run": run_model._meta.label},
            lambda: self.db,
        )
        self._buffer: WriteBuffer[TaskEvent] = WriteBuffer(
            self._write_journaled, journal=self.journal
        )

    @property
    def db(self) -> str:
        """The database alias the rows are written to (the router's choice for the tasks)."""
        return router.db_for_write(self.task_model)

    @property
    def rows(self) -> EventWriter:
        """The per-event writer, on the current database alias."""
        return EventWriter(self.task_model, self.run_model, self.db)

    def record(self, event: TaskEvent) -> None:
        """Journal ``event`` and queue it for the writer thread (``WRITE_BEHIND``), or write it
        now: with write-behind off, for an eager task (it runs inside the caller, who expects
        its rows when ``apply()`` returns), inside ``write_through()``, and when the journal
        cannot take it (a full disk, a read-only folder: nothing is lost)."""
        if (
            hub_settings.WRITE_BEHIND
            and not event.eager
            and not writing_through()
            and self._buffer.add(event)
        ):
            return
        # Progress or a retry's publish written from a task body is not the body's cost.
        with not_counted():
            if writing_through() and self._in_callers_transaction() and self._write_apart(event):
                return
            self._write(event)

    def _in_callers_transaction(self) -> bool:
        # SQLite has one writer at a time: a second connection waits for the caller's write
        # lock (from its first write, or from its start with ``transaction_mode: IMMEDIATE``)
        # until its timeout, then fails. There the rows stay in the caller's transaction.
        conn = connections[self.db]
        return conn.vendor != "sqlite" and in_callers_atomic(conn)

    def _write_apart(self, event: TaskEvent) -> bool:
        """Write ``event`` on a connection of its own, committed at once, so that a caller who
        rolls back does not erase the record of a message that was really sent (``submit``
        inside a transaction). ``False`` if it could not (the row names a user the caller
        created in its transaction, which no other connection sees): write it in theirs."""
        unwritten: list[TaskEvent] = [event]

        def write() -> None:
            try:
                unwritten[:] = write_events(self.rows, [event])
            except Exception:
                logger.exception("tasks-hub could not record %s on its own connection", event)
            finally:
                connections.close_all()  # This thread's connections only.

        start_thread(write, "tasks-hub-apart", daemon=False).join()
        return not unwritten

    def _write_journaled(self, events: Sequence[TaskEvent], segment: Segment | None) -> None:
        """The writer thread's batch and the journal segment holding it: write the batch (and
        any segments kept from a database outage), then delete the segment, or keep it."""
        journal = self.journal
        if journal.waiting():
            journal.keep(segment, failed=False)  # The database failed a moment ago.
            return
        rows = self.rows
        if not journal.write_kept(rows) or (events and write_events(rows, events)):
            journal.keep(segment)
            return
        journal.written(segment)

    def write_batch(self, events: Sequence[TaskEvent]) -> None:
        """Write a batch of buffered events, set-based where it can (see ``BatchWriter``).

        If a write fails (a database error, a bug), the events from there on are written again
        on their own, with the usual retries, so one bad event never costs the others.
        """
        writer = BatchWriter(self.rows)
        try:
            writer.write(events)
        except Exception as exc:
            drop_broken_connection(self.db)
            self._link(events[: writer.written])
            rest = events[writer.written :]
            logger.warning(
                "tasks-hub could not write %d of a batch of %d events (%s: %s); "
                "writing them one by one",
                len(rest),
                len(events),
                type(exc).__name__,
                exc,
            )
            for event in rest:
                self._write(event)
        else:
            self._link(events)

    def _link(self, events: Sequence[TaskEvent]) -> None:
        """Link the publishes among ``events`` to their objects, once their rows are written."""
        link_events(self.rows, events)

    def _write(self, event: TaskEvent, attempt: int = 0) -> None:
        """Write one event as a batch of one, through the same statements as a batch."""
        try:
            BatchWriter(self.rows).write([event])
            self._link([event])
        except Exception as exc:
            drop_broken_connection(self.db)
            if attempt >= hub_settings.WRITE_RETRIES:
                logger.exception(
                    "tasks-hub gave up recording %s of %s[%s] after %d attempts",
                    event.kind,
                    event.name,
                    event.broker_id,
                    attempt + 1,
                )
                return
            delay = hub_settings.WRITE_RETRY_DELAY * (2**attempt)
            logger.warning(
                "tasks-hub could not record %s of %s[%s] (%s: %s); trying again in %.1fs",
                event.kind,
                event.name,
                event.broker_id,
                type(exc).__name__,
                exc,
                delay,
            )
            background.submit(lambda: self._write(event, attempt + 1), delay)
