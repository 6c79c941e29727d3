"""The write-behind buffer: receivers queue events, one thread per process writes batches."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.db import connections

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.locking import fork_guard
from django_tasks_hub.recorder.background import background
from django_tasks_hub.threads import start_thread

if TYPE_CHECKING:
    from django_tasks_hub.recorder.journal import Journal

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the writer thread waits for new items before it closes its database connection and
#: ends; the next item starts a new one.
IDLE_SECONDS = 10.0

#: At most this many full batches wait in a buffer; then ``add()`` waits for the writer. Small,
#: so that a process that exits has little left to write and an overloaded database slows the
#: receivers (as writing in the signal would) instead of filling memory.
PENDING_BATCHES = 2
#: Seconds a process that exits waits for its buffers to be written.
EXIT_FLUSH_SECONDS = 30.0

_buffers: weakref.WeakSet[WriteBuffer[Any]] = weakref.WeakSet()
_local = threading.local()


@contextlib.contextmanager
def write_through() -> Iterator[None]:
    """Within the block, this thread's events are written in their signal, not buffered.

    For the code that needs a row as soon as ``apply_async()`` returns
    (``services.submit`` returns it).
    """
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth


def writing_through() -> bool:
    """Whether this thread is inside :func:`write_through`."""
    return bool(getattr(_local, "depth", 0))


class WriteBuffer(Generic[T]):
    """Items waiting to be handed, in batches and in the order they came, to ``sink``.

    ``add()`` costs an append: the thread calling it (a publisher's request, a task's process)
    never waits for the database. A batch is written ``FLUSH_INTERVAL`` seconds after its first
    item came, or at once when it holds ``FLUSH_MAX_EVENTS``. The thread keeps its database
    connection between batches (Django's connections are per thread, so Celery closing the
    task's connection after every task does not touch it) and closes it once idle.

    Each process has its own: a forked child starts empty (what the parent queued is the
    parent's to write), and every buffer is flushed when the process exits.
    """

    def __init__(
        self,
        sink: Callable[..., None],
        name: str = "tasks-hub-writer",
        journal: Journal | None = None,
    ) -> None:
        #: Called with each batch, and with the journal segment holding it when there is a
        #: ``journal`` (``sink(batch, segment)``): the sink deletes or keeps the segment.
        self._sink = sink
        self._name = name
        self.journal = journal
        self._reset()
        _buffers.add(self)

    def _reset(self) -> None:
        # Also called in a forked child, where only the forking thread exists: nothing else
        # can hold the parent's condition, and its items are the parent's.
        self._items: list[T] = []
        self._first_at = 0.0
        self._busy = False
        self._flushing = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._segment: Any = None
        self._pid = os.getpid()

    def add(self, item: T) -> bool:
        """Queue ``item``; the writer thread hands it to the sink with the next batch.

        With a journal, the item is appended to it first; ``False`` (nothing queued) when the
        journal cannot take it: the caller writes it itself.
        """
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            # Bounded: when the database falls behind, the receivers wait for the writer, as
            # they would writing in the signal, instead of the buffer growing without end.
            while (
                len(self._items) >= hub_settings.FLUSH_MAX_EVENTS * PENDING_BATCHES
                and self._thread is not None
            ):
                self._cond.wait(0.1)
            if self.journal is not None and not self.journal.append(item):  # type: ignore[arg-type]
                return False
            first = not self._items
            if first:
                self._first_at = time.monotonic()
            self._items.append(item)
            if self._thread is None:
                self._thread = start_thread(self._run, self._name)
            elif first or len(self._items) >= hub_settings.FLUSH_MAX_EVENTS:
                # The writer sleeps until there is something to write, then until it is due.
                self._cond.notify_all()
        return True

    def pending(self) -> int:
        """How many items are queued or being written."""
        with self._cond:
            return len(self._items) + (1 if self._busy else 0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write what is queued now and wait for it; ``False`` if ``timeout`` ran out first."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return not self._items
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._items or self._busy:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None:
                        return False
                    self._cond.wait(min(remaining, 0.05))
            finally:
                self._flushing -= 1
        return True

    def _next_batch(self) -> list[T] | None:
        """Wait for a batch that is due; ``None`` once idle for ``IDLE_SECONDS``."""
        with self._cond:
            idle_until = time.monotonic() + IDLE_SECONDS
            while not self._items:
                retry_in = self.journal.retry_in() if self.journal is not None else None
                if retry_in is not None:
                    # Segments kept through a database outage: try them again in time, even
                    # when no new event comes.
                    if retry_in <= 0:
                        self._segment = None  # No new events: only the kept segments.
                        self._busy = True
                        return []
                    self._cond.wait(retry_in)
                    continue
                remaining = idle_until - time.monotonic()
                if remaining <= 0:
                    self._thread = None
                    return None
                self._cond.wait(remaining)
            while not self._flushing and len(self._items) < hub_settings.FLUSH_MAX_EVENTS:
                wait = self._first_at + hub_settings.FLUSH_INTERVAL - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
            batch, self._items = self._items, []
            # The segment holding exactly this batch: appends happen under the same lock.
            self._segment = self.journal.rotate() if self.journal is not None else None
            self._busy = True
            self._cond.notify_all()  # Receivers waiting for room (see add()).
            return batch

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    # Held around the write: a pool process forked meanwhile would inherit
                    # SQLite's lock state half-taken (see locking.fork_guard).
                    with fork_guard():
                        if self.journal is not None:
                            self._sink(batch, self._segment)
                        else:
                            self._sink(batch)
                except Exception:
                    logger.exception("tasks-hub could not write a batch of %d events", len(batch))
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            # Idle, or the interpreter is going away: give the connection back.
            connections.close_all()


def flush_all(timeout: float = 10.0) -> bool:
    """Write every buffer of this process and wait; ``False`` if ``timeout`` ran out first."""
    deadline = time.monotonic() + timeout
    done = True
    for buffer in list(_buffers):
        done = buffer.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def flush(timeout: float = 10.0) -> bool:
    """Write every event this process has recorded so far and wait for it.

    With ``WRITE_BEHIND`` on, a task's rows appear a moment after ``apply_async()``
    returns; call this where the next line needs them (a script that publishes then reads the
    rows, a test). ``False`` if ``timeout`` ran out first.
    """
    done = background.flush(timeout)
    return flush_all(timeout) and done


@atexit.register
def _flush_at_exit() -> None:
    if not flush_all(timeout=EXIT_FLUSH_SECONDS):
        logger.error(
            "tasks-hub exited with events it could not write in %d seconds", EXIT_FLUSH_SECONDS
        )
