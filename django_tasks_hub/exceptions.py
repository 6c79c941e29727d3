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
