"""Task statuses, the active and terminal sets, and the transitions allowed between them."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TaskStatus(models.TextChoices):
    """One vocabulary for tasks and runs; the first six values are the seed's, unchanged."""

    PENDING = "pending", _("Pending")
    PROCESSING = "processing", _("Processing")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")
    REFUSED = "refused", _("Refused")
    RETRYING = "retrying", _("Retrying")
    LOST = "lost", _("Lost")


class ScheduleOrigin(models.TextChoices):
    """Why a run of a periodic task was sent: by its scheduler at a fire time, or by hand."""

    NONE = "", _("Not periodic")
    BEAT = "beat", _("Beat")
    RUN_NOW = "run_now", _("Run now")


class FireOutcome(models.TextChoices):
    """What became of one fire time of a schedule."""

    ON_TIME = "on_time", _("On time")
    LATE = "late", _("Late")
    MISSED = "missed", _("Missed")


class RunTrigger(models.TextChoices):
    """Why a run exists."""

    INITIAL = "initial", _("Initial")
    RETRY = "retry", _("Retry")
    RESTART = "restart", _("Restart")
    REDELIVERED = "redelivered", _("Redelivered")


ACTIVE_STATUSES: frozenset[str] = frozenset(
    {TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.RETRYING}
)
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.REFUSED, TaskStatus.LOST}
)

# Rule 1 of the design, made independent of arrival order. A status only ever moves up this
# order, so the status a row ends in is the strongest event it received, whatever the order the
# events came in. Among the ends of one attempt, evidence from the process that ran it beats an
# inference (``lost``: the worker did not answer) and a refusal, and a cancel beats everything:
# once a person or a revoke cancelled an attempt, a late report of it changes nothing.
#: The ends of an attempt, weakest first.
END_PRECEDENCE: tuple[str, ...] = (
    TaskStatus.LOST,
    TaskStatus.REFUSED,
    TaskStatus.RETRYING,
    TaskStatus.FAILED,
    TaskStatus.DONE,
    TaskStatus.CANCELED,
)


def _weaker_ends(status: str) -> frozenset[str]:
    return frozenset(END_PRECEDENCE[: END_PRECEDENCE.index(status)])


#: Run statuses in which the attempt is still going.
RUN_OPEN_STATUSES: frozenset[str] = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})

#: For a run (one attempt): the statuses it may take ``target`` from. ``retrying`` is an end
#: here (the attempt asked for a retry; the next attempt is another run) and may be taken
#: again from itself, so the retry's own report fills in what the next attempt's publish,
#: which comes first, could not know (error, traceback, runtime).
RUN_ALLOWED_FROM: dict[str, frozenset[str]] = {
    TaskStatus.PENDING: frozenset(),
    TaskStatus.PROCESSING: frozenset({TaskStatus.PENDING}),
    **{end: RUN_OPEN_STATUSES | _weaker_ends(end) for end in END_PRECEDENCE},
}
RUN_ALLOWED_FROM[TaskStatus.RETRYING] |= {TaskStatus.RETRYING}

#: For a task, between events of the same attempt: ``retrying`` means "waiting for the next
#: attempt", on the same footing as ``pending``; an event of a later attempt wins over any
#: active status of an earlier one (see :data:`TASK_SUPERSEDED`).
TASK_ALLOWED_FROM: dict[str, frozenset[str]] = {
    TaskStatus.PENDING: frozenset(),
    TaskStatus.RETRYING: frozenset({TaskStatus.PENDING}),
    TaskStatus.PROCESSING: frozenset({TaskStatus.PENDING, TaskStatus.RETRYING}),
    **{
        end: ACTIVE_STATUSES | (_weaker_ends(end) - {TaskStatus.RETRYING})
        for end in END_PRECEDENCE
        if end != TaskStatus.RETRYING
    },
}

#: A task in one of these statuses takes any event of a later attempt (a higher Celery retry
#: count): the earlier attempt is over. ``lost`` is here because it is only an inference; a
#: cancelled, failed or finished task stays as it is.
TASK_SUPERSEDED: frozenset[str] = ACTIVE_STATUSES | {TaskStatus.LOST}


def can_transition(current: str, target: str) -> bool:
    """Return whether a task in ``current`` may move to ``target`` (rule 1)."""
    return current in TASK_ALLOWED_FROM[target]


def is_terminal(status: str) -> bool:
    """Return whether ``status`` ends a task."""
    return status in TERMINAL_STATUSES
