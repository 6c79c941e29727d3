"""TaskDbPlugin: writes every lifecycle event into Task and TaskRun rows."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Case, F, Q, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest, Least

from django_tasks_hub.background import background
from django_tasks_hub.buffer import WriteBuffer, writing_through
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.history import HistoryPage, HistoryQuery, get_history
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.plugins.base import TaskEvent, TaskHubPlugin
from django_tasks_hub.plugins.batch import BatchWriter, Item
from django_tasks_hub.states import (
    RUN_ALLOWED_FROM,
    TASK_ALLOWED_FROM,
    TASK_SUPERSEDED,
    RunTrigger,
    TaskStatus,
)

logger = logging.getLogger(__name__)

# Namespace for task ids derived from broker ids that are not UUIDs.
_ID_NAMESPACE = uuid.UUID("0b7bd6f2-2d52-4d0e-9a0b-5f5c7d9a4c11")

#: The error a run gets when the broker delivered its attempt again (its worker was lost).
REDELIVERED_ERROR = "The worker running this attempt was lost; the broker delivered it again."


def task_pk_for(broker_id: str) -> uuid.UUID:
    """The primary key a task gets when its first event names ``broker_id``.

    It equals the Celery id when that is a UUID, so ``Task.objects.get(pk=result.id)`` works
    for a task's first run; later runs (restarts) get new broker ids and keep this key.
    """
    try:
        return uuid.UUID(str(broker_id))
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, str(broker_id))


_CONTAINERS = (list, tuple, dict)


def to_json(value: Any) -> Any:
    """``value`` as the JSON columns can store it: a result never fails a write.

    Celery's JSON serializer carries datetimes, dates, UUIDs and decimals; the columns store
    them as Django's encoder writes them (ISO 8601, text). What no JSON can hold (an object,
    ``NaN``, which PostgreSQL's ``jsonb`` refuses) is stored as its ``repr``.
    """
    if isinstance(value, str):
        # PostgreSQL stores no NUL character, in text or in jsonb.
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    if value is None or isinstance(value, int) or (type(value) in _CONTAINERS and not value):
        return value  # Most calls' args and results: nothing to encode to find out.
    if isinstance(value, float) and math.isfinite(value):
        return value
    try:
        # The C encoder, strict: what it accepts, every JSON column accepts as it is.
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        try:
            text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
        except (TypeError, ValueError):
            return to_json(repr(value))
        value = json.loads(text)
    if "\\u0000" in text:
        return to_json(repr(value))
    return value


def _clip(text: str) -> str:
    limit = hub_settings.MAX_TRACEBACK_LENGTH
    text = text.replace("\x00", "\\x00")  # PostgreSQL stores no NUL character.
    return text if len(text) <= limit else text[: limit - 15] + "\n...[truncated]"


@dataclass(frozen=True)
class _TaskRef:
    """The task row an event belongs to, and whether this event just created it."""

    pk: Any
    attempts: int
    created: bool


class TaskDbPlugin(TaskHubPlugin):
    """Records tasks and runs in the database: every write is an upsert or a conditional UPDATE.

    Rule 1 (statuses only move forward) and rule 2 (the first event creates the rows) of the
    design live here and nowhere else. Each event may arrive first, late or twice: the rows end
    the same whatever the order (``tests/test_ordering.py`` delivers every order). A write that
    fails is logged and tried again on the background thread (``WRITE_RETRIES`` times); it
    never raises into Celery.

    Lock order: the task row, then its runs, as ``services.cancel`` does, so a receiver and a
    cancel never wait on each other in a cycle.
    """

    name: ClassVar[str] = "db"
    task_model: ClassVar[type[Task]] = Task
    run_model: ClassVar[type[TaskRun]] = TaskRun

    # -- hooks ---------------------------------------------------------------------------------

    def on_queued(self, event: TaskEvent) -> None:
        self._record(self.record_queued, event)

    def on_started(self, event: TaskEvent) -> None:
        self._record(self.record_transition, event)

    on_retried = on_succeeded = on_failed = on_canceled = on_refused = on_lost = on_started

    def on_progress(self, event: TaskEvent) -> None:
        self._record(self.record_progress, event)

    def on_skipped(self, event: TaskEvent) -> None:
        self._record(self.forget, event)

    # -- write-behind --------------------------------------------------------------------------

    def __init__(self) -> None:
        self._buffer: WriteBuffer[Item] = WriteBuffer(self.write_batch)

    def _record(self, fn: Callable[[TaskEvent], None], event: TaskEvent) -> None:
        # An eager task runs inside the caller, who expects its rows when ``apply()`` returns.
        if hub_settings.WRITE_BEHIND and not event.eager and not writing_through():
            self._buffer.add((fn, event))
        else:
            self._write(fn, event)

    def write_batch(self, items: Sequence[Item]) -> None:
        """Write a batch of buffered events, set-based where it can (see ``BatchWriter``).

        If a write fails (a database error, a bug), the events from there on are written again
        on their own, with the usual retries, so one bad event never costs the others.
        """
        writer = BatchWriter(self)
        try:
            writer.write(items)
        except Exception as exc:
            self._drop_broken_connection()
            rest = items[writer.written :]
            logger.warning(
                "tasks-hub could not write %d of a batch of %d events (%s: %s); "
                "writing them one by one",
                len(rest),
                len(items),
                type(exc).__name__,
                exc,
            )
            for fn, event in rest:
                self._write(fn, event)

    # -- history -------------------------------------------------------------------------------

    def get_history(self, query: HistoryQuery) -> HistoryPage:
        """Return one page of runs, newest first; pass ``page.cursor`` back for the next."""
        return get_history(query, self.run_model.objects.using(self.db).all())

    # -- error handling ------------------------------------------------------------------------

    @property
    def db(self) -> str:
        return router.db_for_write(self.task_model)

    def _write(self, fn: Callable[[TaskEvent], None], event: TaskEvent, attempt: int = 0) -> None:
        try:
            fn(event)
        except Exception as exc:
            self._drop_broken_connection()
            if attempt >= hub_settings.WRITE_RETRIES:
                logger.exception(
                    "tasks-hub gave up recording %s of %s[%s] after %d attempts",
                    event.kind,
                    event.name,
                    event.broker_id,
                    attempt + 1,
                )
                return
            delay = hub_settings.WRITE_RETRY_DELAY * (2**attempt)
            logger.warning(
                "tasks-hub could not record %s of %s[%s] (%s: %s); trying again in %.1fs",
                event.kind,
                event.name,
                event.broker_id,
                type(exc).__name__,
                exc,
                delay,
            )
            background.submit(lambda: self._write(fn, event, attempt + 1), delay)

    def _drop_broken_connection(self) -> None:
        # A connection that failed (closed under us, server restarted) stays failed until it
        # is closed; Django opens a new one on next use. Inside the caller's transaction the
        # connection is theirs: the savepoint was rolled back and they carry on.
        conn = connections[self.db]
        if conn.in_atomic_block or (conn.connection is not None and not conn.get_autocommit()):
            return
        try:
            conn.close()
        except Exception:
            logger.debug("tasks-hub could not close a failed connection", exc_info=True)

    # -- the writes ----------------------------------------------------------------------------

    def record_queued(self, event: TaskEvent) -> None:
        """A publish: create the task and its run as pending, or fill in what the publisher
        knows best when a worker's event created them first.

        A retry's publish (``retries`` > 0) also ends the attempt before it as ``retrying``
        and marks the task ``retrying`` until the next attempt starts.
        """
        with transaction.atomic(using=self.db):
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
                runs.for_broker_id(event.broker_id, event.retries - 1).open().update(
                    status=TaskStatus.RETRYING, finished_at=event.timestamp
                )

    def record_transition(self, event: TaskEvent) -> None:
        """Move the task and the run to ``event.status`` where rule 1 allows; fill in the rest."""
        status = event.status
        run_fields, task_fields = self._fields(event)
        with transaction.atomic(using=self.db):
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
        tasks.update(progress=to_json(event.progress), updated_at=event.timestamp)

    # -- status moves: conditional UPDATEs (rule 1) -------------------------------------------

    def _move_task(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        """Move the task to ``status``; the number of rows moved (0 or 1)."""
        tasks = self.task_model.objects.using(self.db).filter(broker_id=event.broker_id)
        if event.retries is None:
            # The event does not say which attempt it is about: it ends the current one.
            return tasks.filter(status__in=TASK_ALLOWED_FROM[status]).update(
                status=status, updated_at=event.timestamp, **fields
            )
        retries = event.retries
        allowed = TASK_ALLOWED_FROM[status]
        if event.kind == "retried":
            # The attempt asked for a retry: the task waits for the next attempt. Its publish
            # usually got here first; the retry's report then only adds the error.
            retries += 1
            allowed = allowed | {TaskStatus.RETRYING}
        # An event of a later attempt wins over an earlier attempt that has not ended (rule 1
        # across retries); an event of an earlier attempt never touches a later one.
        condition = Q(retries=retries, status__in=allowed) | Q(
            retries__lt=retries, status__in=TASK_SUPERSEDED
        )
        return tasks.filter(condition).update(
            status=status, retries=retries, updated_at=event.timestamp, **fields
        )

    def _move_run(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        """Move the event's run to ``status``; the number of rows moved."""
        allowed = RUN_ALLOWED_FROM[status]
        runs = self._runs(event)
        moved = runs.filter(status__in=allowed - {TaskStatus.LOST}).update(status=status, **fields)
        if not moved and TaskStatus.LOST in allowed and event.retries is not None:
            # A lost run may still take a stronger end (its worker was only out of reach),
            # unless the broker delivered the attempt again: the new delivery's run takes it.
            moved = (
                runs.filter(status=TaskStatus.LOST)
                .current_delivery()
                .update(status=status, **fields)
            )
        return moved

    def _runs(self, event: TaskEvent) -> Any:
        """The runs of the event's attempt, all its deliveries (without ``retries``: the open
        runs of the broker id)."""
        runs = self.run_model.objects.using(self.db).for_broker_id(event.broker_id, event.retries)
        return runs.open() if event.retries is None else runs

    @staticmethod
    def _fields(event: TaskEvent) -> tuple[dict[str, Any], dict[str, Any]]:
        """The columns ``event`` sets on the run and on the task when it moves them.

        An end sets every end column, even to empty, so that when a stronger end replaces a
        weaker one (a late success after ``lost``) nothing of the weaker one is left behind.
        """
        kind, ts = event.kind, event.timestamp
        worker = {"worker": event.worker} if event.worker else {}
        if kind == "started":
            run = {"started_at": ts, "worker": event.worker}
            return run, {**run, "finished_at": None}
        error, traceback = _clip(event.error), _clip(event.traceback)
        result = to_json(event.result) if kind == "succeeded" else None
        run = {
            "finished_at": ts,
            "runtime": event.runtime,
            "result": result,
            "error": error,
            "traceback": traceback,
            **worker,
        }
        if kind == "retried":
            return run, {"error": error, "traceback": traceback}
        task = {"finished_at": ts, "result": result, "error": error, "traceback": traceback}
        return run, {**task, **worker}

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
            **self.publish_values(event),
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

    @staticmethod
    def _args(event: TaskEvent) -> Any:
        args = list(event.args) if isinstance(event.args, tuple) else event.args
        return to_json(args) or []

    def _task_row(self, event: TaskEvent) -> Task:
        return self.task_model(**self.task_values(event))

    def task_values(self, event: TaskEvent) -> dict[str, Any]:
        """The columns of the task row ``event`` creates, by attribute name."""
        retries = event.retries or 0
        parent = event.parent_id if event.parent_id != event.broker_id else None
        return {
            "id": task_pk_for(event.broker_id),
            "name": event.name,
            **self.publish_values(event),
            "status": TaskStatus.RETRYING if retries else TaskStatus.PENDING,
            "broker_id": event.broker_id,
            "retries": retries,
            "parent_id": self._parent_pk(parent),
            "tags": list(event.tags),
            "attempts": 1 + retries,
            "created_at": event.timestamp,
            "updated_at": event.timestamp,
            "created_by_id": event.user_id,
        }

    def publish_values(self, event: TaskEvent) -> dict[str, Any]:
        """The task columns the first publish knows best: the call and its options."""
        return {
            "args": self._args(event),
            "kwargs": to_json(event.kwargs) or {},
            "options": to_json(event.options) or {},
        }

    def run_values(self, event: TaskEvent, task_pk: Any, attempt: int) -> dict[str, Any]:
        """The columns of the run ``event`` creates for the task ``task_pk``."""
        retries = event.retries or 0
        return {
            "task_id": task_pk,
            "name": event.name,
            "attempt": attempt,
            "broker_id": event.broker_id,
            "retries": retries,
            "trigger": RunTrigger.RETRY if retries else RunTrigger.INITIAL,
            "triggered_by_id": event.user_id,
            "status": TaskStatus.PENDING,
            "queued_at": event.timestamp,
        }

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
        run = self.run_model(**self.run_values(event, task.pk, attempt))
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
            closed = runs.filter(pk=pk, status=TaskStatus.PROCESSING).update(
                status=TaskStatus.LOST, finished_at=event.timestamp, error=REDELIVERED_ERROR
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
            tasks.filter(
                pk=task_pk,
                broker_id=event.broker_id,
                retries=event.retries or 0,
                status=TaskStatus.LOST,
            ).update(
                status=TaskStatus.PROCESSING,
                error="",
                traceback="",
                finished_at=None,
                updated_at=event.timestamp,
            )
        return True
