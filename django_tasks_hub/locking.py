"""How the package's writes take the database's locks, so concurrent writers never deadlock.

Two things matter on SQLite, whatever its settings (Django's default ones included):

- **A write transaction takes the write lock when it begins.** In SQLite's default
  (``DEFERRED``) mode a transaction that reads first holds a shared lock, and its first write
  then asks for the write lock. If another connection took the write lock meanwhile and waits
  for the readers to go in order to commit, the two wait on each other: SQLite answers
  ``database is locked`` at once, without waiting for the busy timeout. A cancel (in the web
  process) racing the worker's write of the same task's end did exactly that.
  :func:`write_transaction` starts with a write that changes nothing, so it waits, within the
  busy timeout, for the lock like any writer and then holds it: nothing can deadlock.
- **No process forks while one of its threads is inside a write.** SQLite keeps the state of
  its file locks per process, in memory a forked child inherits, but the locks themselves are
  not inherited. A prefork pool process forked while the worker's background thread was
  writing (Celery forks a new one each time a cancel terminates one) believed forever that
  another connection of its own process held the lock: every write it tried failed with
  ``database is locked``. :func:`fork_guard` holds, around each write of the package's
  threads, a lock that ``os.fork()`` takes first.

On other databases both are no-ops.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from django.db import connections, router, transaction

from django_tasks_hub.models import TaskRun, Worker

#: Held by a thread while it writes to SQLite; ``os.fork()`` waits for it (see the docstring).
_fork_lock = threading.RLock()


def _before_fork() -> None:
    _fork_lock.acquire()


def _after_fork_in_parent() -> None:
    _fork_lock.release()


def _after_fork_in_child() -> None:
    global _fork_lock
    # Only the forking thread exists in the child; the lock it held is the parent's.
    _fork_lock = threading.RLock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def is_sqlite(using: str) -> bool:
    return bool(connections[using].vendor == "sqlite")


@contextlib.contextmanager
def fork_guard(using: str | None = None) -> Iterator[None]:
    """Around a write of a thread of the package: the process does not fork meanwhile."""
    if not is_sqlite(using or router.db_for_write(TaskRun)):
        yield
        return
    with _fork_lock:
        yield


@contextlib.contextmanager
def write_transaction(using: str, *, in_caller_transaction: bool = False) -> Iterator[None]:
    """``transaction.atomic(using=using)`` that, on SQLite, holds the write lock from its start.

    Only when it opens the transaction: inside one that is already open (the caller's), the
    lock is taken as that transaction's first write does, unless ``in_caller_transaction``
    (restart and cancel, which read the task under the lock before they write it).
    """
    connection = connections[using]
    take = connection.vendor == "sqlite" and (
        in_caller_transaction or not connection.in_atomic_block
    )
    with transaction.atomic(using=using):
        if take:
            table = connection.ops.quote_name(Worker._meta.db_table)
            with connection.cursor() as cursor:
                # A write that changes no row: SQLite takes the write lock for it, and keeps it
                # until the transaction ends.
                cursor.execute(f"UPDATE {table} SET id = id WHERE 0")
        yield


def in_callers_atomic(conn: Any) -> bool:
    """Whether this thread is inside an ``atomic()`` block of the caller on ``conn``.

    Blocks opened by Django's ``TestCase`` (and pytest-django's ``db``) do not count: they never
    commit, so what is written under them is rolled back at the end of the test, and a row
    written on another connection to outlive the caller would outlive the test instead.
    """
    return bool(conn.in_atomic_block) and any(
        not getattr(block, "_from_testcase", False) for block in conn.atomic_blocks
    )
