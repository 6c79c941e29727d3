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

# Rule 1 of the design: a row takes a status only from one of these. Nothing leaves a terminal
# status (only a restart, which starts a new run), so late and duplicate events change nothing.
_CLOSED_FROM_ACTIVE = frozenset(ACTIVE_STATUSES)

#: For a task: ``retrying`` -> ``processing`` is the task starting its next attempt.
TASK_ALLOWED_FROM: dict[str, frozenset[str]] = {
    TaskStatus.PENDING: frozenset(),
    TaskStatus.PROCESSING: frozenset({TaskStatus.PENDING, TaskStatus.RETRYING}),
    TaskStatus.RETRYING: frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING}),
    TaskStatus.DONE: _CLOSED_FROM_ACTIVE,
    TaskStatus.FAILED: _CLOSED_FROM_ACTIVE,
    TaskStatus.CANCELED: _CLOSED_FROM_ACTIVE,
    TaskStatus.REFUSED: _CLOSED_FROM_ACTIVE,
    TaskStatus.LOST: _CLOSED_FROM_ACTIVE,
}

#: For a run: an attempt that ends in ``retrying`` is closed for good; its next attempt is
#: another run, so a late duplicate of its start can never reopen it.
_RUN_OPEN = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})
RUN_ALLOWED_FROM: dict[str, frozenset[str]] = {
    TaskStatus.PENDING: frozenset(),
    TaskStatus.PROCESSING: frozenset({TaskStatus.PENDING}),
    TaskStatus.RETRYING: _RUN_OPEN,
    TaskStatus.DONE: _RUN_OPEN,
    TaskStatus.FAILED: _RUN_OPEN,
    TaskStatus.CANCELED: _RUN_OPEN,
    TaskStatus.REFUSED: _RUN_OPEN,
    TaskStatus.LOST: _RUN_OPEN,
}
#: Run statuses in which the attempt is still going.
RUN_OPEN_STATUSES: frozenset[str] = _RUN_OPEN


def can_transition(current: str, target: str) -> bool:
    """Return whether a task in ``current`` may move to ``target`` (rule 1)."""
    return current in TASK_ALLOWED_FROM[target]


def is_terminal(status: str) -> bool:
    """Return whether ``status`` ends a task."""
    return status in TERMINAL_STATUSES
