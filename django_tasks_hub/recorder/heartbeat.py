"""The workers' trace of life: a worker's main process keeps its ``Worker`` row up to date."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.db import connections
from django.utils import timezone

from django_tasks_hub.broker import acknowledged_requests, describe_worker
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.locking import fork_guard
from django_tasks_hub.models import Worker
from django_tasks_hub.threads import start_thread

logger = logging.getLogger(__name__)

#: Seconds between two looks at the messages the worker acknowledged. A look costs a few
#: microseconds; a write happens only when what it saw changed, or when a beat is due.
POLL_SECONDS = 0.5


class Heartbeat:
    """One thread in a worker's main process that writes the worker's row.

    Every ``TASKS_HUB["WORKER_HEARTBEAT_SECONDS"]`` it sets ``last_seen``, so reconcile knows a
    SIGKILLed worker is gone once its row falls silent, without asking it, and never takes a
    worker busy with a long task (a ``solo`` worker cannot answer a ping then) for dead. Between
    beats it also writes, within ``POLL_SECONDS``, the ids of the messages the worker has
    acknowledged and runs (``Worker.acknowledged``): if the worker dies, those are the messages
    no broker delivers again, which reconcile then ends as ``lost``.
    """

    def __init__(self, description: dict[str, Any]) -> None:
        self.description = description
        self.hostname = str(description.get("hostname") or "")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        interval = float(hub_settings.WORKER_HEARTBEAT_SECONDS or 0)
        if not self.hostname or interval <= 0:
            return
        self._write(started=True)
        self._thread = start_thread(self._run, "tasks-hub-heartbeat", args=(interval,))

    def stop(self) -> None:
        """End the thread and say the worker stopped cleanly (``stopped_at``)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._thread = None
        self._write(stopped=True)

    def _run(self, interval: float) -> None:
        last_ids: list[str] | None = None
        due = time.monotonic() + interval
        try:
            while not self._stop.wait(min(POLL_SECONDS, interval)):
                try:
                    ids, _ = acknowledged_requests()
                except Exception:
                    ids = last_ids or []
                if ids != last_ids or time.monotonic() >= due:
                    if self._write():
                        last_ids = ids
                    due = time.monotonic() + interval
        finally:
            connections.close_all()

    def _write(self, *, started: bool = False, stopped: bool = False) -> bool:
        now = timezone.now()
        try:
            ids, processed = acknowledged_requests()
        except Exception:
            ids, processed = [], 0
        values: dict[str, Any] = {
            "last_seen": now,
            "acknowledged": [] if stopped else ids,
            "processed": processed,
        }
        try:
            with fork_guard():
                self._save(values, now, started=started, stopped=stopped)
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "tasks-hub could not write the heartbeat of %s (%s: %s); trying again",
                    self.hostname,
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            # A connection the database dropped is opened again at the next beat.
            connections.close_all()
            return False
        if self._failing:
            logger.info("tasks-hub writes the heartbeat of %s again", self.hostname)
        self._failing = False
        return True

    def _save(self, values: dict[str, Any], now: Any, *, started: bool, stopped: bool) -> None:
        rows = Worker.objects.filter(hostname=self.hostname)
        if stopped:
            rows.update(**values, stopped_at=now)
            return
        # A beat updates the row; the first one, or one that finds the row deleted (pruned
        # meanwhile), writes it whole.
        if not started and rows.update(**values):
            return
        fields: dict[str, Any] = {
            key: self.description[key]
            for key in ("pool", "concurrency", "queues", "software")
            if key in self.description
        }
        Worker.objects.update_or_create(
            hostname=self.hostname,
            defaults={**fields, **values, "pid": os.getpid(), "stopped_at": None}
            | ({"started_at": now} if started else {}),
        )


_current: Heartbeat | None = None


def start(consumer: Any) -> None:
    """Start the heartbeat of the worker ``consumer`` belongs to (``worker_ready``)."""
    global _current
    stop()
    _current = Heartbeat(describe_worker(consumer))
    _current.start()


def stop() -> None:
    """Stop this process's heartbeat, if it has one (``worker_shutdown``)."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
