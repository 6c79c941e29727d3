"""The writes of one event through the ORM: what the set-based batches leave to one at a time.

``recorder.writer`` writes a batch's common lifecycle (first publishes, starts, ends) a group
of events per statement; every other event (a retry's publish, a cancel, a loss, a refusal,
progress, a forget), and every group whose statements did not find exactly the rows they
expected (a worker's event before the publish, a duplicate, a redelivery), is written here, in
arrival order. Both take the rule from ``transitions`` and the values from ``columns``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest, Least

from django_tasks_hub import transitions
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.locking import write_transaction
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.recorder import columns
from django_tasks_hub.recorder.columns import task_pk_for
from django_tasks_hub.states import RunTrigger, TaskStatus
from django_tasks_hub.transitions import TaskMove

#: The error a run gets when the broker delivered its attempt again (its worker was lost).
REDELIVERED_ERROR = "The worker running this attempt was lost; the broker delivered it again."


@dataclass(frozen=True)
class _TaskRef:
    """The task row an event belongs to, and whether this event just created it."""

    pk: Any
    attempts: int
    created: bool


class EventWriter:
    """Writes one event into the task and run rows: upserts and conditional UPDATEs.

    Each event may arrive first, late or twice: the rows end the same whatever the order
    (``tests/test_ordering.py`` delivers every order). Lock order: the task row, then its
    runs, as ``services.cancel`` does, so two writers never wait on each other in a cycle.
    """

    def __init__(self, task_model: type[Task], run_model: type[TaskRun], db: str) -> None:
        self.task_model = task_model
        self.run_model = run_model
        self.db = db

    def write(self, event: TaskEvent) -> None:
        """Write ``event``, whatever its kind."""
        if event.kind == "queued":
            self.record_queued(event)
        elif event.kind == "progress":
            self.record_progress(event)
        elif event.kind == "skipped":
            self.forget(event)
        else:
            self.record_transition(event)

    # -- the writes ----------------------------------------------------------------------------

    def record_queued(self, event: TaskEvent) -> None:
        """A publish: create the task and its run as pending, or fill in what the publisher
        knows best when a worker's event created them first.

        A retry's publish (``retries`` > 0) also ends the attempt before it as ``retrying``
        and marks the task ``retrying`` until the next attempt starts.
        """
        with write_transaction(self.db):
            task = self._ensure_task(event)
            if task is None:
                return
            if not task.created and not event.retries and task.pk == task_pk_for(event.broker_id):
                # A worker's event created the task first. (A restart's publish is skipped: the
                # restart wrote its rows, and the task was created long before.)
                self._fill_from_publish(event)
            if not self._ensure_run(event, task):
                self._runs(event).filter(delivery=0).update(
                    queued_at=Least(
                        Coalesce(F("queued_at"), Value(event.timestamp)), Value(event.timestamp)
                    ),
                    **({"triggered_by_id": event.user_id} if event.user_id is not None else {}),
                )
            if event.retries:
                # The task row before the earlier run (the lock order of the class docstring).
                if not task.created:
                    self._move_task(event, TaskStatus.RETRYING, {})
                runs = self.run_model.objects.using(self.db)
                transitions.end_attempt_for_retry(
                    runs.for_broker_id(event.broker_id, event.retries - 1),
                    finished_at=event.timestamp,
                )

    def record_transition(self, event: TaskEvent) -> None:
        """Move the task and the run to ``event.status`` where rule 1 allows; fill in the rest."""
        status = event.status
        run_fields, task_fields = columns.move_values(event)
        with write_transaction(self.db):
            # A move that changes nothing is tried once more after making sure the row is
            # there: it may be this task's first event, or another writer (the publisher) may
            # have committed the row after the move looked, since each statement sees what is
            # committed when it starts. Inserting a row that is being inserted waits for it.
            task_moved = self._move_task(event, status, task_fields)
            if not task_moved and event.retries is not None:
                if not self._task_exists(event):
                    task = self._ensure_task(event)
                    if task is None:
                        return
                    self._ensure_run(event, task)
                task_moved = self._move_task(event, status, task_fields)
            run_moved = self._move_run(event, status, run_fields)
            # Only a start that found its run already started can be a new delivery: the first
            # start of a run (the common case) costs no extra query.
            if not run_moved and event.kind == "started" and self._close_redelivered(event):
                run_moved = self._move_run(event, status, run_fields)
            if not run_moved and event.retries is not None:
                if not self._runs(event).exists():
                    # Published outside Django, eagerly, or in a transaction that rolled back.
                    task = self._ensure_task(event)
                    if task is None:
                        return
                    self._ensure_run(event, task)
                task_moved = task_moved or self._move_task(event, status, task_fields)
                run_moved = self._move_run(event, status, run_fields)
            if event.kind == "started":
                self._fill_start(event, run_moved, task_moved)

    def _task_exists(self, event: TaskEvent) -> bool:
        tasks = self.task_model.objects.using(self.db)
        return tasks.filter(broker_id=event.broker_id).exists()

    def forget(self, event: TaskEvent) -> None:
        """Delete the rows a publisher wrote for a task that must not be recorded."""
        tasks = self.task_model.objects.using(self.db)
        tasks.filter(pk=task_pk_for(event.broker_id), broker_id=event.broker_id).delete()

    def record_progress(self, event: TaskEvent) -> None:
        """Store the progress a running task reported on its task row."""
        tasks = self.task_model.objects.using(self.db).filter(
            broker_id=event.broker_id, status=TaskStatus.PROCESSING
        )
        if event.retries is not None:
            tasks = tasks.filter(retries=event.retries)
        tasks.update(progress=columns.to_json(event.progress), updated_at=event.timestamp)

    # -- status moves: conditional UPDATEs (rule 1) -------------------------------------------

    def _move_task(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        """Move the task to ``status``; the number of rows moved (0 or 1)."""
        tasks = self.task_model.objects.using(self.db).filter(broker_id=event.broker_id)
        move = TaskMove(status, event.retries, event.kind)
        return transitions.move_tasks(tasks, move, updated_at=event.timestamp, **fields)

    def _move_run(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        """Move the event's run to ``status``; the number of rows moved."""
        known = event.retries is not None
        return transitions.move_runs(
            self._runs(event),
            status,
            current_delivery=(lambda runs: runs.current_delivery()) if known else None,  # type: ignore[attr-defined]
            **fields,
        )

    def _runs(self, event: TaskEvent) -> Any:
        """The runs of the event's attempt, all its deliveries (without ``retries``: the open
        runs of the broker id)."""
        runs = self.run_model.objects.using(self.db).for_broker_id(event.broker_id, event.retries)
        return runs.open() if event.retries is None else runs

    def _fill_start(self, event: TaskEvent, run_moved: int, task_moved: int) -> None:
        """A start that came after its run or task had moved on: keep when and where it ran.

        The first start of a run is kept (a duplicate delivery of it changes nothing); the
        task shows the start of the run of its current attempt. The task is written first
        (the lock order), with what the run will hold once this start is in.
        """
        runs = self._runs(event)
        if not task_moved and event.retries is not None:
            at = Value(event.timestamp)
            current = runs.order_by("-delivery").annotate(
                start=Coalesce(F("started_at"), at),
                host=Case(
                    When(started_at__isnull=True, then=Value(event.worker)), default="worker"
                ),
            )
            self.task_model.objects.using(self.db).filter(
                broker_id=event.broker_id, retries=event.retries
            ).update(
                started_at=Subquery(current.values("start")[:1]),
                worker=Subquery(current.values("host")[:1]),
            )
        if not run_moved:
            runs.filter(started_at__isnull=True).update(
                started_at=event.timestamp, worker=event.worker
            )

    def _fill_from_publish(self, event: TaskEvent) -> None:
        """The first publish knows the options, the creator and the creation time best."""
        fields: dict[str, Any] = {
            **columns.publish_values(event),
            "created_at": Least(F("created_at"), Value(event.timestamp)),
        }
        tasks = self.task_model.objects.using(self.db).filter(broker_id=event.broker_id)
        tasks.update(**fields)
        if event.user_id is not None:
            tasks.filter(created_by__isnull=True).update(created_by_id=event.user_id)

    # -- creating rows (rule 2) ----------------------------------------------------------------

    def _insert(self, obj: Any) -> bool:
        """INSERT ``obj``; ``False`` when a unique key says it is there already."""
        try:
            with transaction.atomic(using=self.db):
                obj.save(force_insert=True, using=self.db)
        except IntegrityError:
            return False
        return True

    def _task_row(self, event: TaskEvent) -> Task:
        return self.task_model(**self.task_values(event))

    def task_values(self, event: TaskEvent) -> dict[str, Any]:
        """The columns of the task row ``event`` creates, its parent looked up."""
        parent = event.parent_id if event.parent_id != event.broker_id else None
        return columns.task_values(event, self._parent_pk(parent))

    def _parent_pk(self, parent_broker_id: str | None) -> uuid.UUID | None:
        if not parent_broker_id:
            return None
        pk = (
            self.task_model.objects.using(self.db)
            .filter(broker_id=parent_broker_id)
            .values_list("pk", flat=True)
            .first()
            or self.run_model.objects.using(self.db)
            .filter(broker_id=parent_broker_id)
            .values_list("task_id", flat=True)
            .first()
        )
        # The parent may not be recorded yet (another process writes its rows); the key it
        # will get is known, and the foreign key has no database constraint.
        return pk or task_pk_for(parent_broker_id)

    def _ensure_task(self, event: TaskEvent) -> _TaskRef | None:
        """The task ``event`` is about, created when this is the first event of its broker id.

        ``None`` for a late event of a broker id no task knows any more (its task deleted).
        """
        tasks = self.task_model.objects.using(self.db)

        def current() -> _TaskRef | None:
            found = tasks.filter(broker_id=event.broker_id).values_list("pk", "attempts").first()
            return None if found is None else _TaskRef(found[0], found[1], created=False)

        # A first attempt is usually new; a later attempt's task is usually there already.
        if event.retries and (ref := current()) is not None:
            return ref
        row = self._task_row(event)
        if self._insert(row):
            return _TaskRef(row.pk, row.attempts, created=True)
        if (ref := current()) is not None:
            return ref
        # A late event of a broker id the task had before a restart: find it by its runs.
        runs = self.run_model.objects.using(self.db).filter(broker_id=event.broker_id)
        pk = runs.values_list("task_id", flat=True).first() or task_pk_for(event.broker_id)
        found = tasks.filter(pk=pk).values_list("pk", "attempts").first()
        return None if found is None else _TaskRef(found[0], found[1], created=False)

    def _attempt_number(self, event: TaskEvent, task: _TaskRef) -> int:
        """The run's ``attempt``: a function of the broker id and the retry count, not of the
        order runs are created in, so an attempt recorded before the one ahead of it is
        numbered the same as in order."""
        retries = event.retries or 0
        if task.created or task.pk == task_pk_for(event.broker_id):
            base = 1  # The task's first broker id.
        else:
            # A restart's broker id: its first run was written by the restart.
            first = self.run_model.objects.using(self.db).filter(
                broker_id=event.broker_id, retries=0, delivery=0
            )
            base = first.values_list("attempt", flat=True).first() or task.attempts + 1
        redelivered = 0
        if retries and not task.created:
            redelivered = (
                self.run_model.objects.using(self.db)
                .filter(broker_id=event.broker_id, retries__lt=retries, delivery__gt=0)
                .count()
            )
        return base + retries + redelivered

    def _ensure_run(self, event: TaskEvent, task: _TaskRef) -> bool:
        """Create the run ``event`` is about; ``False`` when it is there already."""
        attempt = self._attempt_number(event, task)
        run = self.run_model(**columns.run_values(event, task.pk, attempt))
        if attempt > task.attempts:
            # Before the INSERT: the task row is locked before its runs, by every writer.
            # Counting an attempt whose run turns out to exist already changes nothing.
            self.task_model.objects.using(self.db).filter(pk=task.pk).update(
                attempts=Greatest(F("attempts"), Value(attempt))
            )
        return self._insert(run)

    def _close_redelivered(self, event: TaskEvent) -> bool:
        """A redelivered message (``acks_late`` after a worker died) ends the run that was
        processing as lost and opens a new run for the new delivery, instead of bringing the
        old one back.

        A start is a new delivery when its run already started at another moment: some
        transports never set the ``redelivered`` flag (kombu's filesystem transport), and a
        retried write of the same start carries the same timestamp. A run that reconcile had
        already marked ``lost`` gets its new run too, and its task follows the new run.
        """
        previous = (
            self._runs(event)
            .filter(status__in=(TaskStatus.PROCESSING, TaskStatus.LOST), started_at__isnull=False)
            .exclude(started_at=event.timestamp)
            .values_list("pk", "task_id", "delivery", "attempt", "status")
            .first()
        )
        if previous is None:
            return False
        pk, task_pk, delivery, attempt, was = previous
        runs = self.run_model.objects.using(self.db)
        if was == TaskStatus.PROCESSING:
            closed = transitions.close_redelivered(
                runs.filter(pk=pk), finished_at=event.timestamp, error=REDELIVERED_ERROR
            )
            if not closed:
                return False
        run = self.run_model(
            task_id=task_pk,
            name=event.name,
            attempt=attempt + 1,
            broker_id=event.broker_id,
            retries=event.retries or 0,
            delivery=delivery + 1,
            trigger=RunTrigger.REDELIVERED,
            status=TaskStatus.PENDING,
            queued_at=event.timestamp,
        )
        if not self._insert(run):
            return False
        tasks = self.task_model.objects.using(self.db)
        tasks.filter(pk=task_pk).update(attempts=Greatest(F("attempts"), Value(attempt + 1)))
        if was == TaskStatus.LOST:
            # Like a restart, a new delivery is a new run: the task leaves ``lost``.
            transitions.reopen_redelivered(
                tasks.filter(pk=task_pk, broker_id=event.broker_id, retries=event.retries or 0),
                error="",
                traceback="",
                finished_at=None,
                updated_at=event.timestamp,
            )
        return True
