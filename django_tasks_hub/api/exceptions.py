"""The one mapping from the service errors to HTTP answers."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException

from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    TaskHubError,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)

#: HTTP status of each service error; a subclass answers as its nearest listed base.
STATUS_CODES: dict[type[TaskHubError], int] = {
    TaskNotFound: status.HTTP_404_NOT_FOUND,
    TaskNotRestartable: status.HTTP_409_CONFLICT,
    TaskNotCancelable: status.HTTP_409_CONFLICT,
    UnknownTaskName: status.HTTP_409_CONFLICT,
    BrokerUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

#: Seconds a client should wait before trying again when the broker is down.
RETRY_AFTER_SECONDS = 5


class TaskHubAPIError(APIException):
    """A service error as an API answer: ``{"detail", "code", "status"?}``."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    default_detail = _("The request could not be carried out.")
    default_code = "error"

    def __init__(self, error: TaskHubError, status_code: int) -> None:
        body: dict[str, Any] = {"detail": error.message, "code": error.code}
        if error.status is not None:
            body["status"] = error.status
        super().__init__(detail=body, code=error.code)
        self.status_code = status_code
        self.error = error


def status_code_for(error: TaskHubError) -> int:
    """The HTTP status answering ``error``."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return status.HTTP_400_BAD_REQUEST


def to_api_exception(exc: Exception) -> Exception:
    """``exc`` as DRF understands it: service errors become :class:`TaskHubAPIError`."""
    if isinstance(exc, TaskHubError):
        return TaskHubAPIError(exc, status_code_for(exc))
    return exc


def headers_for(exc: Exception) -> dict[str, str]:
    """Extra headers of an error answer (``Retry-After`` when the broker is down)."""
    if isinstance(exc, TaskHubAPIError) and isinstance(exc.error, BrokerUnavailable):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return {}
