"""TaskDbPlugin: writes every lifecycle event into Task and TaskRun rows."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Q

from django_tasks_hub.background import background
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.history import HistoryPage, HistoryQuery, get_history
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.plugins.base import TaskEvent, TaskHubPlugin
from django_tasks_hub.states import (
    ACTIVE_STATUSES,
    RUN_ALLOWED_FROM,
    TASK_ALLOWED_FROM,
    RunTrigger,
    TaskStatus,
)

logger = logging.getLogger(__name__)

# Namespace for task ids derived from broker ids that are not UUIDs.
_ID_NAMESPACE = uuid.UUID("0b7bd6f2-2d52-4d0e-9a0b-5f5c7d9a4c11")


def task_pk_for(broker_id: str) -> uuid.UUID:
    """The primary key a task gets when its first event names ``broker_id``.

    It equals the Celery id when that is a UUID, so ``Task.objects.get(pk=result.id)`` works
    for a task's first run; later runs (restarts) get new broker ids and keep this key.
    """
    try:
        return uuid.UUID(str(broker_id))
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, str(broker_id))


def to_json(value: Any) -> Any:
    """``value`` if it can be stored as JSON, else its ``repr``: a result never fails a write."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _clip(text: str) -> str:
    limit = hub_settings.MAX_TRACEBACK_LENGTH
    return text if len(text) <= limit else text[: limit - 15] + "\n...[truncated]"


class TaskDbPlugin(TaskHubPlugin):
    """Records tasks and runs in the database: every write is an upsert or a conditional UPDATE.

    Rule 1 (transitions only move forward) and rule 2 (the first event creates the rows) of
    the design live here and nowhere else. A write that fails is logged and tried again on the
    background thread (``WRITE_RETRIES`` times); it never raises into Celery.
    """

    name: ClassVar[str] = "db"
    task_model: ClassVar[type[Task]] = Task
    run_model: ClassVar[type[TaskRun]] = TaskRun

    # -- hooks ---------------------------------------------------------------------------------

    def on_queued(self, event: TaskEvent) -> None:
        self._write(self.record_queued, event)

    def on_started(self, event: TaskEvent) -> None:
        self._write(self.record_transition, event)

    on_retried = on_succeeded = on_failed = on_canceled = on_refused = on_lost = on_started

    def on_progress(self, event: TaskEvent) -> None:
        self._write(self.record_progress, event)

    # -- history -------------------------------------------------------------------------------

    def get_history(self, query: HistoryQuery) -> HistoryPage:
        """Return one page of runs, newest first; pass ``page.cursor`` back for the next."""
        return get_history(query, self.run_model.objects.all())

    # -- writing -------------------------------------------------------------------------------

    @property
    def db(self) -> str:
        return router.db_for_write(self.task_model)

    def _write(self, fn: Callable[[TaskEvent], None], event: TaskEvent, attempt: int = 0) -> None:
        try:
            fn(event)
        except Exception as exc:
            retries = hub_settings.WRITE_RETRIES
            if attempt >= retries:
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
                "tasks-hub could not record %s of %s[%s] (%s); trying again in %.1fs",
                event.kind,
                event.name,
                event.broker_id,
                exc,
                delay,
            )
            background.submit(lambda: self._retry(fn, event, attempt + 1), delay)

    def _retry(self, fn: Callable[[TaskEvent], None], event: TaskEvent, attempt: int) -> None:
        # A broken connection stays broken until closed; closing it lets Django reconnect.
        connections[self.db].close_if_unusable_or_obsolete()
        self._write(fn, event, attempt)

    def _task_row(self, event: TaskEvent, status: str) -> Task:
        return self.task_model(
            pk=task_pk_for(event.broker_id),
            name=event.name,
            args=to_json(list(event.args) if isinstance(event.args, tuple) else event.args) or [],
            kwargs=to_json(event.kwargs) or {},
            options=to_json(event.options) or {},
            status=status,
            broker_id=event.broker_id,
            retries=event.retries or 0,
            parent_id=self._parent_pk(event.parent_id),
            tags=list(event.tags),
            attempts=1,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            created_by_id=event.user_id,
        )

    def _parent_pk(self, parent_broker_id: str | None) -> uuid.UUID | None:
        if not parent_broker_id:
            return None
        Model = self.task_model
        pk = (
            Model.objects.using(self.db)
            .filter(broker_id=parent_broker_id)
            .values_list("pk", flat=True)
            .first()
            or self.run_model.objects.using(self.db)
            .filter(broker_id=parent_broker_id)
            .values_list("task_id", flat=True)
            .first()
        )
        # The parent may not be recorded yet (its rows are written by another process);
        # the key it will get is known, and the foreign key has no database constraint.
        return pk or task_pk_for(parent_broker_id)

    def _run_row(self, event: TaskEvent, task_pk: Any, attempt: int, status: str) -> TaskRun:
        retries = event.retries or 0
        return self.run_model(
            task_id=task_pk,
            name=event.name,
            attempt=attempt,
            broker_id=event.broker_id,
            retries=retries,
            trigger=RunTrigger.RETRY if retries else RunTrigger.INITIAL,
            triggered_by_id=event.user_id,
            status=status,
            queued_at=event.timestamp,
        )

    def _insert(self, obj: Any) -> bool:
        """INSERT ``obj``; ``False`` when a unique key says it is there already."""
        try:
            with transaction.atomic(using=self.db):
                obj.save(force_insert=True, using=self.db)
        except IntegrityError:
            return False
        return True

    def _ensure_run(self, event: TaskEvent) -> None:
        """Create the task and the run ``event`` is about, when they are not there yet."""
        if self._insert(self._task_row(event, TaskStatus.PENDING)):
            self._insert(self._run_row(event, task_pk_for(event.broker_id), 1, TaskStatus.PENDING))
            return
        runs = self.run_model.objects.using(self.db)
        if runs.for_broker_id(event.broker_id, event.retries).exists():
            return
        # The task exists under this broker id (a retry, or the row a restart wrote) or, for a
        # late event of an earlier run, under another one that this broker id once had.
        tasks = self.task_model.objects.using(self.db)
        found = tasks.filter(broker_id=event.broker_id).values_list("pk", "attempts").first()
        if found is None:
            task_pk = runs.filter(broker_id=event.broker_id).values_list("task_id", flat=True)
            pk = task_pk.first()
            if pk is None:
                return
            found = tasks.filter(pk=pk).values_list("pk", "attempts").first()
            if found is None:
                return
        pk, attempts = found
        if self._insert(self._run_row(event, pk, attempts + 1, TaskStatus.PENDING)):
            tasks.filter(pk=pk).update(attempts=F("attempts") + 1)

    def record_queued(self, event: TaskEvent) -> None:
        """A publish: create the task and its run as pending; a retry's publish marks the task
        ``retrying`` until the next attempt starts."""
        with transaction.atomic(using=self.db):
            self._ensure_run(event)
            if event.retries:
                self._update_task(event, TaskStatus.RETRYING, {})

    def record_transition(self, event: TaskEvent) -> None:
        """Move the run and its task to ``event.status`` if rule 1 allows; fill in the fields."""
        status = event.status
        run_fields, task_fields = self._fields(event)
        with transaction.atomic(using=self.db):
            if event.redelivered:
                self._close_redelivered(event)
            if not self._update_run(event, status, run_fields):
                if (
                    not self.run_model.objects.using(self.db)
                    .for_broker_id(event.broker_id, event.retries)
                    .exists()
                ):
                    # Published outside Django, eagerly, or in a transaction that rolled back.
                    self._ensure_run(event)
                    self._update_run(event, status, run_fields)
                elif status == TaskStatus.PROCESSING:
                    # The run already moved on (its end was written first): keep the start.
                    self._runs(event).filter(started_at__isnull=True).update(
                        started_at=event.timestamp, worker=event.worker
                    )
            self._update_task(event, status, task_fields)

    def _runs(self, event: TaskEvent) -> Any:
        return self.run_model.objects.using(self.db).for_broker_id(event.broker_id, event.retries)

    def _update_run(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        qs = self._runs(event).filter(status__in=RUN_ALLOWED_FROM[status])
        return qs.update(status=status, **fields)

    def _update_task(self, event: TaskEvent, status: str, fields: dict[str, Any]) -> int:
        allowed = TASK_ALLOWED_FROM[status]
        if event.retries is None:
            condition = Q(status__in=allowed)
            extra: dict[str, Any] = {}
        else:
            # A later attempt may overtake an earlier one's events (rule 1 across retries):
            # an event of attempt N+1 wins over any active state of attempt N, and an event of
            # attempt N never touches a task that has reached N+1.
            condition = Q(retries=event.retries, status__in=allowed) | Q(
                retries__lt=event.retries, status__in=ACTIVE_STATUSES
            )
            extra = {"retries": event.retries}
        qs = self.task_model.objects.using(self.db).filter(broker_id=event.broker_id)
        return qs.filter(condition).update(
            status=status, updated_at=event.timestamp, **extra, **fields
        )

    def _close_redelivered(self, event: TaskEvent) -> None:
        """A redelivered message (``acks_late`` after a worker died) ends the open run as lost
        and opens a new run for the new delivery, instead of bringing the old one back."""
        closed = (
            self._runs(event)
            .filter(status=TaskStatus.PROCESSING)
            .update(
                status=TaskStatus.LOST,
                finished_at=event.timestamp,
                error="The worker running this attempt was lost; the broker delivered it again.",
            )
        )
        if not closed:
            return
        runs = self._runs(event)
        previous = runs.order_by("-delivery").first()
        if previous is None:
            return
        tasks = self.task_model.objects.using(self.db)
        attempts = tasks.filter(pk=previous.task_id).values_list("attempts", flat=True).first()
        run = self._run_row(event, previous.task_id, (attempts or 0) + 1, TaskStatus.PENDING)
        run.delivery = previous.delivery + 1
        run.trigger = RunTrigger.REDELIVERED
        run.triggered_by_id = None
        if self._insert(run):
            tasks.filter(pk=previous.task_id).update(attempts=F("attempts") + 1)

    @staticmethod
    def _fields(event: TaskEvent) -> tuple[dict[str, Any], dict[str, Any]]:
        """The columns ``event`` fills in, for the run and for the task."""
        kind = event.kind
        ts = event.timestamp
        if kind == "started":
            run = {"started_at": ts, "worker": event.worker}
            task = {"started_at": ts, "worker": event.worker, "finished_at": None}
            return run, task
        run = {"finished_at": ts}
        task: dict[str, Any] = {}
        if event.runtime is not None:
            run["runtime"] = event.runtime
        if event.worker:
            run["worker"] = event.worker
        if kind == "succeeded":
            result = to_json(event.result)
            run["result"] = result
            task.update(result=result, error="", traceback="", finished_at=ts)
        elif kind == "retried":
            run.update(error=_clip(event.error), traceback=_clip(event.traceback))
            task.update(error=_clip(event.error), traceback=_clip(event.traceback))
        else:
            run.update(error=_clip(event.error), traceback=_clip(event.traceback))
            task.update(error=_clip(event.error), traceback=_clip(event.traceback), finished_at=ts)
        return run, task

    def record_progress(self, event: TaskEvent) -> None:
        """Store the progress a running task reported."""
        self.task_model.objects.using(self.db).filter(
            broker_id=event.broker_id, status=TaskStatus.PROCESSING
        ).update(progress=to_json(event.progress), updated_at=event.timestamp)
