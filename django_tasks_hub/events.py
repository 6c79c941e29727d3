"""TaskEvent: one lifecycle transition of one attempt, as the receivers report it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django_tasks_hub.states import TaskStatus


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
    #: The periodic schedule that sent the task ("" when sent by hand) and how
    #: (``ScheduleOrigin``: its scheduler at a fire time, or a "run now").
    schedule: str = ""
    schedule_origin: str = ""
    #: ``app_label.model:pk`` keys of the objects a publish links its task to.
    related: tuple[str, ...] = ()
    #: What the task body cost (end events): SQL queries, seconds in them, peak memory growth.
    db_queries: int | None = None
    db_time: float | None = None
    memory_growth: int | None = None
    #: The release the worker ran (start and end events).
    release: str = ""

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


@dataclass(frozen=True)
class MissedFire:
    """A fire time of a schedule that no run served within its grace (``on_missed``)."""

    schedule: str
    task: str
    fire_at: datetime.datetime
    grace: float
    detected_at: datetime.datetime
