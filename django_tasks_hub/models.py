"""Task and TaskRun: what a person restarts or cancels, and the history of its attempts."""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections, models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.states import (
    ACTIVE_STATUSES,
    RUN_OPEN_STATUSES,
    TERMINAL_STATUSES,
    RunTrigger,
    TaskStatus,
)

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager


class TaskQuerySet(models.QuerySet):
    """Query logic for tasks: chainable and shared by the API, the admin and the commands."""

    def active(self) -> TaskQuerySet:
        """Tasks that are queued, running or waiting for a retry."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> TaskQuerySet:
        """Tasks that have ended, whatever the outcome."""
        return self.filter(status__in=TERMINAL_STATUSES)

    def restartable(self) -> TaskQuerySet:
        """Tasks a restart accepts: every task that is not active."""
        return self.terminal()

    def cancelable(self) -> TaskQuerySet:
        """Tasks a cancel accepts: every active task."""
        return self.active()

    def failed(self) -> TaskQuerySet:
        """Tasks whose latest run failed or was lost."""
        return self.filter(status__in=(TaskStatus.FAILED, TaskStatus.LOST))

    def by_name(self, name: str) -> TaskQuerySet:
        """Tasks of one Celery task name."""
        return self.filter(name=name)

    def with_status(self, *statuses: str) -> TaskQuerySet:
        """Tasks in any of ``statuses``."""
        return self.filter(status__in=statuses)

    def tagged(self, tag: str) -> TaskQuerySet:
        """Tasks whose Celery task carries ``tag``."""
        if connections[self.db].vendor == "postgresql":
            # jsonb containment, which a GIN index can serve.
            return self.filter(tags__contains=[tag])
        # SQLite and others have no JSON containment; match the quoted element in the text.
        return self.filter(tags__icontains=f'"{tag}"')

    def stale(self, older_than: datetime.timedelta) -> TaskQuerySet:
        """Active tasks not updated for ``older_than``: candidates for reconcile."""
        return self.active().filter(updated_at__lt=timezone.now() - older_than)

    def finished_before(self, moment: datetime.datetime) -> TaskQuerySet:
        """Terminal tasks that ended before ``moment``: candidates for pruning."""
        return self.terminal().filter(finished_at__lt=moment)


class TaskRunQuerySet(models.QuerySet):
    """Query logic for runs."""

    def open(self) -> TaskRunQuerySet:
        """Runs whose attempt has not ended yet (pending or processing)."""
        return self.filter(status__in=RUN_OPEN_STATUSES)

    def for_broker_id(self, broker_id: str, retries: int | None = None) -> TaskRunQuerySet:
        """Runs of one Celery message; ``retries`` narrows to one attempt."""
        qs = self.filter(broker_id=broker_id)
        return qs if retries is None else qs.filter(retries=retries)

    def current_delivery(self) -> TaskRunQuerySet:
        """Runs not replaced by a later delivery of the same attempt (``acks_late`` redelivery).

        A lifecycle event names a broker id and a retry count; this keeps it to the run of the
        delivery that is running now, not the one that was lost before it.
        """
        later = self.model._default_manager.filter(
            broker_id=OuterRef("broker_id"),
            retries=OuterRef("retries"),
            delivery__gt=OuterRef("delivery"),
        )
        return self.exclude(Exists(later))

    def newest_first(self) -> TaskRunQuerySet:
        """Runs ordered by id, newest first: the order the cursor pages in."""
        return self.order_by("-id")

    def by_name(self, name: str) -> TaskRunQuerySet:
        """Runs of one Celery task name."""
        return self.filter(name=name)

    def tagged(self, tag: str) -> TaskRunQuerySet:
        """Runs of tasks whose Celery task carries ``tag`` (see :meth:`TaskQuerySet.tagged`)."""
        # Task is defined below; the method runs only once both classes exist.
        return self.filter(task__in=Task.objects.using(self.db).tagged(tag).values("pk"))

    def canceled_unstarted(self) -> TaskRunQuerySet:
        """Cancelled runs that never started: a worker must refuse their messages."""
        return self.filter(status=TaskStatus.CANCELED, started_at__isnull=True)

    def running_on(self, workers: list[str]) -> TaskRunQuerySet:
        """Open runs whose worker is one of ``workers``."""
        return self.open().filter(worker__in=workers)

    def stale_processing(self, started_before: datetime.datetime) -> TaskRunQuerySet:
        """Runs still processing that started before ``started_before``: what reconcile checks."""
        return self.filter(status=TaskStatus.PROCESSING, started_at__lt=started_before)

    def superseded(self) -> TaskRunQuerySet:
        """Runs that are not their task's latest run (a newer run of the same task exists)."""
        newer = self.model._default_manager.filter(
            task_id=OuterRef("task_id"), pk__gt=OuterRef("pk")
        )
        return self.filter(Exists(newer))

    def prunable(self, finished_before: datetime.datetime) -> TaskRunQuerySet:
        """Ended runs older than ``finished_before`` that are not their task's latest run."""
        ended = self.exclude(status__in=RUN_OPEN_STATUSES).filter(finished_at__lt=finished_before)
        return ended.superseded()


# The fields below are built by functions because the concrete tables index them differently
# from AbstractTask. Every index is maintained on each insert and, as the status columns are
# indexed, on each update too: the recorder writes a task row and a run row at publish, start
# and end, so an index no query needs is paid for several times per task. Task and TaskRun
# therefore index their user and parent columns only where they are set (most tasks are
# published by code, with no user and no parent), and Task keeps its broker id unique by a
# constraint, which on PostgreSQL spares it the second, ``varchar_pattern_ops`` index that
# ``unique=True`` adds for LIKE queries none of the hub makes. AbstractTask keeps plain
# indexes, which need no names, so a project's subclass gets working indexes without any.
# ``stale()`` and ``running_on()`` have no index of their own either: the status indexes lead
# to the few active tasks and open runs, which is all those queries read.


def _broker_id_field(*, unique: bool) -> models.CharField:
    return models.CharField(
        _("broker id"),
        max_length=255,
        unique=unique,
        help_text=_("Celery task id of the current run."),
    )


def _parent_field(*, db_index: bool) -> models.ForeignKey:
    return models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        db_constraint=False,
        db_index=db_index,
        help_text=_("The task whose run published this one (chains, groups, subtasks)."),
    )


def _user_field(verbose_name: Any, *, db_index: bool) -> models.ForeignKey:
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=verbose_name,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=db_index,
    )


def _where_set(field: str, name: str) -> models.Index:
    """An index of ``field`` over the rows where it is not null: what its lookups and
    ``on_delete=SET_NULL`` need, without an entry for every row that has none."""
    return models.Index(fields=[field], name=name, condition=Q(**{f"{field}__isnull": False}))


class AbstractTask(models.Model):
    """Everything a task row holds; subclass it to keep tasks of your own with extra fields."""

    id = models.UUIDField(_("id"), primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("task name"), max_length=255, help_text=_("Celery task name."))
    args = models.JSONField(_("positional arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)
    options = models.JSONField(
        _("options"),
        default=dict,
        blank=True,
        help_text=_("Publish options kept for a restart: queue, routing key, priority..."),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING
    )
    broker_id = _broker_id_field(unique=True)
    retries = models.PositiveIntegerField(
        _("retries"), default=0, help_text=_("Celery retry count of the current attempt.")
    )
    parent = _parent_field(db_index=True)
    tags = models.JSONField(_("tags"), default=list, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    traceback = models.TextField(_("traceback"), blank=True, default="")
    progress = models.JSONField(
        _("progress"), null=True, blank=True, help_text=_("current, total and message.")
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    created_by = _user_field(_("created by"), db_index=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")

    objects = TaskQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ("-created_at",)
        permissions = [
            ("restart_task", _("Can restart a task")),
            ("cancel_task", _("Can cancel a task")),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.status}] {self.pk}"

    @property
    def is_active(self) -> bool:
        """Whether the task is queued, running or waiting for a retry."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended."""
        return self.status in TERMINAL_STATUSES

    @property
    def runtime(self) -> float | None:
        """Seconds between the start and the end of the latest attempt, if both are known."""
        if self.started_at and self.finished_at:
            return max((self.finished_at - self.started_at).total_seconds(), 0.0)
        return None


class Task(AbstractTask):
    """A Celery task as a person sees it: restart or cancel it here."""

    # Indexed by Meta below (see the note above _broker_id_field).
    broker_id = _broker_id_field(unique=False)
    parent = _parent_field(db_index=False)
    created_by = _user_field(_("created by"), db_index=False)

    class Meta(AbstractTask.Meta):
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        constraints = [
            models.UniqueConstraint(fields=["broker_id"], name="th_task_broker_id_uniq"),
        ]
        indexes = [
            _where_set("parent", "th_task_parent_idx"),
            _where_set("created_by", "th_task_created_by_idx"),
            models.Index(fields=["-created_at"], name="th_task_created_idx"),
            models.Index(fields=["status", "-created_at"], name="th_task_status_created_idx"),
            models.Index(fields=["name", "-created_at"], name="th_task_name_created_idx"),
        ]

    if TYPE_CHECKING:
        runs: RelatedManager[TaskRun]


class TaskRun(models.Model):
    """One attempt of a task: the initial run, each retry, each restart."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: th_run_task_idx (task, -id) starts with it, and serves the history,
    # the cascade of a task's deletion and the "newer run" subquery alike.
    task = models.ForeignKey(
        Task,
        verbose_name=_("task"),
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,
    )
    name = models.CharField(
        _("task name"), max_length=255, help_text=_("Copied from the task for filtering.")
    )
    attempt = models.PositiveIntegerField(
        _("attempt"), default=1, help_text=_("1 for the first run of the task, then 2, 3...")
    )
    broker_id = models.CharField(_("broker id"), max_length=255)
    retries = models.PositiveIntegerField(_("retries"), default=0)
    delivery = models.PositiveSmallIntegerField(
        _("delivery"),
        default=0,
        help_text=_("0, or how many times the broker delivered this attempt again."),
    )
    trigger = models.CharField(
        _("trigger"), max_length=16, choices=RunTrigger.choices, default=RunTrigger.INITIAL
    )
    triggered_by = _user_field(_("triggered by"), db_index=False)
    status = models.CharField(
        _("status"), max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING
    )
    queued_at = models.DateTimeField(_("queued at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    runtime = models.FloatField(_("runtime (seconds)"), null=True, blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    traceback = models.TextField(_("traceback"), blank=True, default="")
    canceled_by = _user_field(_("canceled by"), db_index=False)

    objects = TaskRunQuerySet.as_manager()

    class Meta:
        verbose_name = _("task run")
        verbose_name_plural = _("task runs")
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=["broker_id", "retries", "delivery"], name="th_run_attempt_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["task", "-id"], name="th_run_task_idx"),
            _where_set("triggered_by", "th_run_triggered_by_idx"),
            _where_set("canceled_by", "th_run_canceled_by_idx"),
            models.Index(fields=["status", "-id"], name="th_run_status_idx"),
            models.Index(fields=["name", "-id"], name="th_run_name_idx"),
            models.Index(fields=["queued_at"], name="th_run_queued_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.attempt} [{self.status}]"

    def as_dict(self) -> dict[str, Any]:
        """The run as plain data, the shape of the seed's ``TaskRunHistory``."""
        return {
            "id": self.pk,
            "task_id": str(self.task_id),
            "task": self.name,
            "attempt": self.attempt,
            "broker_id": self.broker_id,
            "retries": self.retries,
            "trigger": self.trigger,
            "triggered_by": self.triggered_by_id,
            "state": self.status,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "runtime": self.runtime,
            "worker": self.worker,
            "result": self.result,
            "error": self.error,
            "canceled_by": self.canceled_by_id,
        }
