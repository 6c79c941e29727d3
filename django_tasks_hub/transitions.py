"""The transition rule (rule 1 of the design), the one place that moves a status.

A status only moves up its precedence order (``states``). This module turns that order into
the conditions of conditional UPDATEs, twice from the same definitions: as ORM conditions for
the code that moves one row at a time, and as SQL for the recorder's set-based batches
(``recorder.writer``). Every writer of a status column goes through it: the recorder, the
services (restart, cancel), reconcile. ``tests/test_transitions.py`` captures every statement
the suite sends that sets a status and fails if one comes from anywhere else.

The moves here are conditional UPDATEs: the check and the write are one statement, so two
processes racing on the same row cannot both win, and a move that is not allowed changes
nothing (its count is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from django_tasks_hub.states import (
    ACTIVE_STATUSES,
    RUN_ALLOWED_FROM,
    RUN_OPEN_STATUSES,
    TASK_ALLOWED_FROM,
    TASK_SUPERSEDED,
    TERMINAL_STATUSES,
    TaskStatus,
)

# -- the rule, as data -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskMove:
    """A task moving to ``target`` on an event of attempt ``retries`` (``None``: whichever
    attempt is current) of kind ``kind``.

    Within one attempt the task takes ``target`` from ``TASK_ALLOWED_FROM``; an event of a
    later attempt (a higher retry count) wins over an earlier attempt that has not ended
    (``TASK_SUPERSEDED``); an event of an earlier attempt never touches a later one.
    """

    target: str
    retries: int | None
    kind: str = ""

    @property
    def attempt(self) -> int | None:
        """The retry count the task has once moved: a retry report is about the attempt
        before the one the task then waits for."""
        if self.retries is None:
            return None
        return self.retries + 1 if self.kind == "retried" else self.retries

    @property
    def allowed(self) -> frozenset[str]:
        """The statuses the task may take ``target`` from, within the same attempt."""
        allowed = TASK_ALLOWED_FROM[self.target]
        if self.kind == "retried":
            # The next attempt's publish usually got here first (the task is ``retrying``);
            # the retry's own report then only adds the error.
            allowed = allowed | {TaskStatus.RETRYING}
        return allowed


def run_allowed(target: str) -> frozenset[str]:
    """The statuses a run takes ``target`` from in one conditional UPDATE.

    ``lost`` is left out: a lost run takes a stronger end only if it is still its attempt's
    current delivery (:func:`move_runs` checks that in a second statement), since the broker may
    have delivered the attempt again, and the new delivery's run takes the end then.
    """
    return RUN_ALLOWED_FROM[target] - {TaskStatus.LOST}


# -- rendered for the ORM ----------------------------------------------------------------------


def task_condition(move: TaskMove) -> Q:
    """The rows of a broker id that ``move`` may move, as an ORM condition."""
    if move.attempt is None:
        return Q(status__in=move.allowed)
    return Q(retries=move.attempt, status__in=move.allowed) | Q(
        retries__lt=move.attempt, status__in=TASK_SUPERSEDED
    )


def move_tasks(tasks: QuerySet[Any], move: TaskMove, **fields: Any) -> int:
    """Move the tasks of ``tasks`` (one broker id's) as ``move`` allows; rows moved."""
    values = {"status": move.target, **fields}
    if move.attempt is not None:
        values["retries"] = move.attempt
    return tasks.filter(task_condition(move)).update(**values)


def move_runs(
    runs: QuerySet[Any],
    target: str,
    *,
    current_delivery: Callable[[QuerySet[Any]], QuerySet[Any]] | None = None,
    **fields: Any,
) -> int:
    """Move the runs of ``runs`` (one attempt's deliveries) to ``target`` as rule 1 allows.

    With ``current_delivery`` (the attempt is known), a ``lost`` run also takes a stronger end
    when it is the attempt's newest delivery: its worker was only out of reach.
    """
    moved = runs.filter(status__in=run_allowed(target)).update(status=target, **fields)
    if not moved and current_delivery is not None and TaskStatus.LOST in RUN_ALLOWED_FROM[target]:
        lost = current_delivery(runs.filter(status=TaskStatus.LOST))
        moved = lost.update(status=target, **fields)
    return moved


def end_attempt_for_retry(runs: QuerySet[Any], **fields: Any) -> int:
    """A retry's publish ends the open runs of the attempt before it as ``retrying``."""
    return runs.filter(status__in=RUN_OPEN_STATUSES).update(status=TaskStatus.RETRYING, **fields)


def close_redelivered(runs: QuerySet[Any], **fields: Any) -> int:
    """The broker delivered an attempt again (its worker was lost, ``acks_late``): the run that
    was processing ends ``lost``; the new delivery gets a run of its own."""
    return runs.filter(status=TaskStatus.PROCESSING).update(status=TaskStatus.LOST, **fields)


def reopen_redelivered(tasks: QuerySet[Any], **fields: Any) -> int:
    """A task that reconcile had marked ``lost`` runs again when the broker delivers its attempt
    again. Like a restart, a new delivery is a new run: the one move out of an end that is not
    to a stronger end."""
    return tasks.filter(status=TaskStatus.LOST).update(status=TaskStatus.PROCESSING, **fields)


def restart_task(tasks: QuerySet[Any], **fields: Any) -> int:
    """A restart: an ended task becomes ``pending`` again, as a new attempt."""
    return tasks.filter(status__in=TERMINAL_STATUSES).update(status=TaskStatus.PENDING, **fields)


def undo_restart(tasks: QuerySet[Any], previous: dict[str, Any], **fields: Any) -> int:
    """The broker refused a restart's message: the task goes back to how it was.

    ``tasks`` names the restart's broker id, so a later restart that did get through is left
    alone; ``previous`` holds the status and the outcome the restart replaced.
    """
    return tasks.filter(status=TaskStatus.PENDING).update(**previous, **fields)


def fail_unsent(runs: QuerySet[Any], **fields: Any) -> int:
    """The run of a message the broker never got ends ``failed``."""
    return runs.filter(status__in=RUN_OPEN_STATUSES).update(status=TaskStatus.FAILED, **fields)


def cancel_task(tasks: QuerySet[Any], **fields: Any) -> int:
    """A cancel: an active task ends ``canceled``."""
    return tasks.filter(status__in=ACTIVE_STATUSES).update(status=TaskStatus.CANCELED, **fields)


def cancel_runs(runs: QuerySet[Any], **fields: Any) -> int:
    """A cancel ends the task's open runs ``canceled`` (ended runs keep their outcome)."""
    return runs.filter(status__in=RUN_OPEN_STATUSES).update(status=TaskStatus.CANCELED, **fields)


def lose_run(runs: QuerySet[Any], **fields: Any) -> int:
    """Reconcile found the run's worker gone: a run still processing ends ``lost``."""
    return runs.filter(status=TaskStatus.PROCESSING).update(status=TaskStatus.LOST, **fields)


def lose_unstarted_run(runs: QuerySet[Any], **fields: Any) -> int:
    """Reconcile found that the run's message was acknowledged by a worker now gone, which never
    reported its start: no broker delivers it again, so a run still pending ends ``lost``."""
    return runs.filter(status=TaskStatus.PENDING).update(status=TaskStatus.LOST, **fields)


def lose_task(tasks: QuerySet[Any], open_runs: QuerySet[Any], **fields: Any) -> int:
    """Reconcile lost the task's current attempt: an active task with no other open run ends
    ``lost`` (``open_runs``: every run, to look for one of the task still open)."""
    other_open = open_runs.filter(task_id=OuterRef("pk"), status__in=RUN_OPEN_STATUSES)
    return (
        tasks.filter(status__in=ACTIVE_STATUSES)
        .exclude(Exists(other_open))
        .update(status=TaskStatus.LOST, **fields)
    )


# -- rendered as SQL, for the recorder's batches -----------------------------------------------


def literals(statuses: Iterable[str]) -> str:
    """``statuses`` as SQL literals; they are the package's own constants, never user input."""
    return ", ".join(f"'{value}'" for value in sorted(statuses))


def task_condition_sql(target: str, kind: str, status: str, retries: str, param: str) -> str:
    """:func:`task_condition` as SQL, for an event of kind ``kind`` moving to ``target``.

    ``status`` and ``retries`` are the quoted columns; ``param`` is the placeholder of the
    task's attempt after the move, which the statement binds twice. Written as a ``CASE``, not
    an ``OR`` of the two: the same rows, but PostgreSQL plans an ``OR`` against every index of
    the table (0.9 ms a statement, against 0.08).
    """
    move = TaskMove(target, 0, kind)
    return (
        f"CASE WHEN {retries} = {param} THEN {status} IN ({literals(move.allowed)})"
        f" WHEN {retries} < {param} THEN {status} IN ({literals(TASK_SUPERSEDED)})"
        " ELSE FALSE END"
    )


def run_condition_sql(target: str, status: str) -> str:
    """:func:`run_allowed` as SQL (``status``: the quoted column).

    Inside a ``CASE``, where no index can take it: PostgreSQL would read the status index for a
    status few live rows have, but whose index entries pile up (no update here is HOT, so every
    move leaves one behind until a vacuum), and visit every heap page they point to. The
    attempt's unique key finds the rows instead.
    """
    return f"CASE WHEN {status} IN ({literals(run_allowed(target))}) THEN TRUE ELSE FALSE END"
