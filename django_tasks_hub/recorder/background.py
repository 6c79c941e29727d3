"""A per-process background thread for work that must not run on Celery's main loop."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connections

from django_tasks_hub.locking import fork_guard
from django_tasks_hub.threads import start_thread

logger = logging.getLogger(__name__)


class Background:
    """Runs callables on one daemon thread, now or after a delay, in the order they are due.

    The worker's main process uses it for the signals it handles itself (revoked, rejected,
    unknown, worker lost), so a slow database write never delays message handling, and every
    process uses it to try a failed write again later. It is created lazily per process id,
    so a prefork child never inherits a parent's dead thread.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._pid = 0
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], None], delay: float = 0.0) -> None:
        """Run ``fn`` on the background thread in ``delay`` seconds."""
        if self._pid != os.getpid():
            # Forked: the parent's queue and thread belong to the parent. Right after a fork
            # only this thread exists, so nothing else holds the old condition.
            self._heap = []
            self._busy = 0
            self._cond = threading.Condition()
            self._thread = None
            self._pid = os.getpid()
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), fn))
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or running; return ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = start_thread(self._run, "tasks-hub-background")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, fn = heapq.heappop(self._heap)
                self._busy += 1
            try:
                close_old_connections()
                with fork_guard():
                    fn()
            except Exception:
                logger.exception("tasks-hub background job failed")
            finally:
                with self._cond:
                    idle = not self._heap or self._heap[0][0] > time.monotonic()
                if idle:
                    # Nothing more to do now: do not hold a database connection while waiting
                    # (the thread lives as long as the process).
                    connections.close_all()
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


background = Background()
