"""Database cost per attempt: the SQL a task body makes, on every database, and its memory growth.

``start()`` (end of ``task_prerun``) appends a meter to ``execute_wrappers`` of every alias's
connection in the running thread, and ``stop()`` (the end signals, or ``task_postrun``)
removes it and returns what it saw. ``execute_wrappers`` belongs to the thread's connection
object, which survives a close and a reconnect, so a connection the body opens later is
measured too. Savepoints and ``BEGIN`` are not counted, nor the hub's own writes
(:func:`not_counted`).

Memory: a process's peak resident size (``ru_maxrss``) never goes down, so the growth of a
run is how far it raised that peak. After warm-up most runs show 0 (they fit in memory the
process already had); a run that loads a large file, or a leak, shows the bytes it added.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from django.db import connections

from django_tasks_hub.conf import hub_settings

# Transaction control, not the task's queries (COMMIT and ROLLBACK never pass the wrappers;
# SQLite's BEGIN IMMEDIATE and every savepoint do).
_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN")
# ru_maxrss is in kilobytes on Linux, in bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024

_local = threading.local()


@dataclass(frozen=True)
class Cost:
    """What one attempt's body cost."""

    queries: int
    seconds: float
    memory_growth: int


class _Meter:
    """An ``execute_wrapper``: counts the statements and the time they take."""

    def __init__(self) -> None:
        self.queries = 0
        self.seconds = 0.0
        self.connections: list[Any] = []
        self.peak = _peak_rss()

    def __call__(
        self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        if getattr(_local, "paused", 0):
            return execute(sql, params, many, context)
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if not (isinstance(sql, str) and sql.lstrip()[:22].upper().startswith(_CONTROL)):
                self.queries += 1
                self.seconds += time.perf_counter() - began


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _RSS_UNIT


def start() -> None:
    """Measure the current thread's task body from now on, on every database alias."""
    if not hub_settings.MEASURE_COST:
        return
    stop()  # A body that never reported its end (a revoked task) leaves nothing behind.
    meter = _Meter()
    for alias in connections:
        conn = connections[alias]
        conn.execute_wrappers.append(meter)
        meter.connections.append(conn)
    _local.meter = meter


def stop() -> Cost | None:
    """Stop measuring; what the body cost, or ``None`` when nothing was being measured."""
    meter: _Meter | None = getattr(_local, "meter", None)
    if meter is None:
        return None
    _local.meter = None
    for conn in meter.connections:
        with suppress(ValueError):
            conn.execute_wrappers.remove(meter)
    return Cost(meter.queries, meter.seconds, max(_peak_rss() - meter.peak, 0))


@contextmanager
def not_counted() -> Iterator[None]:
    """The hub's own writes during a body (progress, a retry's publish): not the task's cost."""
    _local.paused = getattr(_local, "paused", 0) + 1
    try:
        yield
    finally:
        _local.paused -= 1
