"""The domain errors services raise; the API and the admin each map them in one place."""

from __future__ import annotations

from typing import Any


class TaskHubError(Exception):
    """Base class of every django-tasks-hub error."""

    code = "error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def status(self) -> str | None:
        """The task's status when the error was raised, when it is known."""
        value = self.detail.get("status")
        return None if value is None else str(value)


class TaskNotFound(TaskHubError):
    """No task has this id (or the id is malformed)."""

    code = "task_not_found"


class TaskNotRestartable(TaskHubError):
    """The task is still active (pending, processing or retrying)."""

    code = "task_not_restartable"


class TaskNotCancelable(TaskHubError):
    """The task has already ended."""

    code = "task_not_cancelable"


class UnknownTaskName(TaskHubError):
    """The Celery task name is no longer registered, so the task cannot be sent again."""

    code = "unknown_task_name"


class BrokerUnavailable(TaskHubError):
    """The broker could not be reached; nothing was changed that the broker does not know."""

    code = "broker_unavailable"


class WorkerNotAnswering(TaskHubError):
    """The worker named did not answer: it stopped, or the name is wrong."""

    code = "worker_not_answering"


class PoolNotResizable(TaskHubError):
    """The worker's pool cannot grow or shrink (threads, solo, autoscale), or the shrink would
    leave it empty."""

    code = "pool_not_resizable"


class QueueNotFound(TaskHubError):
    """No configuration, worker or broker knows a queue of this name."""

    code = "queue_not_found"


class QueueAlreadyPaused(TaskHubError):
    """The queue is paused already."""

    code = "queue_already_paused"


class QueueNotPaused(TaskHubError):
    """The queue is not paused, so it cannot be resumed."""

    code = "queue_not_paused"


class ScheduleNotControllable(TaskHubError):
    """The schedule is defined in settings (``CELERY_BEAT_SCHEDULE``), or its
    django-celery-beat row is gone: the hub can run, enable or disable only
    django-celery-beat's ``PeriodicTask`` schedules."""

    code = "schedule_not_controllable"


class BulkFilterError(TaskHubError):
    """A bulk action's filter is malformed, unknown, or narrows nothing without ``all=true``."""

    code = "bulk_filter"


class BulkJobNotResumable(TaskHubError):
    """The bulk job has ended, or its runner still holds its lease."""

    code = "bulk_job_not_resumable"


class DatabaseUnavailable(TaskHubError):
    """The database refused the change (down, or locked past its timeout); nothing changed."""

    code = "database_unavailable"
