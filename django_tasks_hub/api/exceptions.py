"""The one mapping from the service errors to HTTP answers."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import OperationalError
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError

from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    BulkFilterError,
    BulkJobNotResumable,
    DatabaseUnavailable,
    PoolNotResizable,
    QueueAlreadyPaused,
    QueueNotFound,
    QueueNotPaused,
    ScheduleNotControllable,
    TaskHubError,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
    WorkerNotAnswering,
)

#: HTTP status of each service error; a subclass answers as its nearest listed base.
STATUS_CODES: dict[type[TaskHubError], int] = {
    TaskNotFound: status.HTTP_404_NOT_FOUND,
    TaskNotRestartable: status.HTTP_409_CONFLICT,
    TaskNotCancelable: status.HTTP_409_CONFLICT,
    UnknownTaskName: status.HTTP_409_CONFLICT,
    ScheduleNotControllable: status.HTTP_409_CONFLICT,
    BrokerUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    WorkerNotAnswering: status.HTTP_404_NOT_FOUND,
    PoolNotResizable: status.HTTP_409_CONFLICT,
    QueueNotFound: status.HTTP_404_NOT_FOUND,
    QueueAlreadyPaused: status.HTTP_409_CONFLICT,
    QueueNotPaused: status.HTTP_409_CONFLICT,
    BulkFilterError: status.HTTP_400_BAD_REQUEST,
    BulkJobNotResumable: status.HTTP_409_CONFLICT,
    DatabaseUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

#: Seconds a client should wait before trying again when the broker or the database is down.
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


def request_too_large(exc: Exception) -> APIException | None:
    """Django's refusal of an oversized request as a JSON 400 (Django alone answers HTML)."""
    if isinstance(exc, TooManyFieldsSent):
        message = gettext(
            "Too many parameters: at most %(max)s (DATA_UPLOAD_MAX_NUMBER_FIELDS). Send each "
            "parameter once; several statuses fit in one, as in ?status=failed,lost."
        ) % {"max": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}
    elif isinstance(exc, TooManyFilesSent):
        message = gettext("Too many files: at most %(max)s (DATA_UPLOAD_MAX_NUMBER_FILES).") % {
            "max": settings.DATA_UPLOAD_MAX_NUMBER_FILES
        }
    elif isinstance(exc, RequestDataTooBig):
        message = gettext(
            "The request body is too large: at most %(max)s bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)."
        ) % {"max": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    else:
        return None
    return ParseError({"detail": message, "code": "request_too_large"})


def to_api_exception(exc: Exception) -> Exception:
    """``exc`` as DRF understands it: service errors become :class:`TaskHubAPIError`, and so
    does a database that is down or locked outside the services (a read of the view);
    Django's refusals of oversized requests become a JSON 400."""
    if isinstance(exc, OperationalError):
        exc = DatabaseUnavailable(
            f"The database could not be reached: {str(exc).strip().rstrip('.')[:300]}. "
            "Try again in a moment; if it keeps happening, check the database."
        )
    if isinstance(exc, TaskHubError):
        return TaskHubAPIError(exc, status_code_for(exc))
    return request_too_large(exc) or exc


def headers_for(exc: Exception) -> dict[str, str]:
    """Extra headers of an error answer (``Retry-After`` when the broker is down)."""
    if isinstance(exc, TaskHubAPIError) and isinstance(
        exc.error, BrokerUnavailable | DatabaseUnavailable
    ):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return {}
