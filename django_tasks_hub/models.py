"""Task and TaskRun: what a person restarts or cancels, and the history of its attempts."""

from __future__ import annotations

import contextlib
import datetime
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.db import NotSupportedError, connections, models
from django.db.models import Exists, F, Lookup, OuterRef, Q, Subquery, Value
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.states import (
    ACTIVE_STATUSES,
    RUN_OPEN_STATUSES,
    TERMINAL_STATUSES,
    FireOutcome,
    RunTrigger,
    ScheduleOrigin,
    TaskStatus,
)

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager


class HasString(Lookup):
    """Whether the JSON array on the left holds the string on the right as one element.

    SQLite has no JSON containment: matching the element in the stored JSON text would let
    the characters JSON escapes (a backslash, a quote) match what they should not, and a long
    pattern fails in ``LIKE``. ``json_each`` compares the decoded elements instead.
    """

    lookup_name = "has_string"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        raise NotSupportedError(
            f"django-tasks-hub cannot filter tags on {connection.vendor}: "
            "use PostgreSQL, SQLite or MySQL."
        )

    def as_sqlite(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        sql = (
            f"EXISTS (SELECT 1 FROM json_each({lhs}) AS th_tag"
            f" WHERE th_tag.type = 'text' AND th_tag.value = {rhs})"
        )
        return sql, [*lhs_params, *rhs_params]

    def as_mysql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"JSON_CONTAINS({lhs}, JSON_QUOTE({rhs}))", [*lhs_params, *rhs_params]


class TaskQuerySet(models.QuerySet):
    """Query logic for tasks: chainable and shared by the API, the admin and the commands."""

    def active(self) -> TaskQuerySet:
        """Tasks that are queued, running or waiting for a retry."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> TaskQuerySet:
        """Tasks that have ended, whatever the outcome."""
        return self.filter(status__in=TERMINAL_STATUSES)

    def by_name(self, name: str) -> TaskQuerySet:
        """Tasks of one Celery task name."""
        return self.filter(name=name)

    def with_status(self, *statuses: str) -> TaskQuerySet:
        """Tasks in any of ``statuses``."""
        return self.filter(status__in=statuses)

    def tagged(self, tag: str) -> TaskQuerySet:
        """Tasks whose Celery task carries ``tag``, exactly (case and every character)."""
        if connections[self.db].vendor == "postgresql":
            if "\x00" in tag:
                # jsonb cannot hold a NUL character, so no stored tag has one (and the query
                # would fail).
                return self.none()
            # jsonb containment, which a GIN index can serve.
            return self.filter(tags__contains=[tag])
        return self.filter(HasString(F("tags"), Value(tag)))

    def finished_before(self, moment: datetime.datetime) -> TaskQuerySet:
        """Terminal tasks that ended before ``moment``: candidates for pruning."""
        return self.terminal().filter(finished_at__lt=moment)

    def matching(self, spec: dict[str, Any]) -> TaskQuerySet:
        """Tasks matching a bulk filter ``spec`` (see :data:`BULK_FILTER_KEYS`).

        The same spec gives the same set wherever it is read (the admin's preview, the API, the
        background job), so a job stores its spec and reads its tasks again from it.
        """
        qs = self
        if spec.get("status"):
            qs = qs.filter(status__in=list(spec["status"]))
        if spec.get("name"):
            qs = qs.filter(name=spec["name"])
        if spec.get("tag"):
            qs = qs.tagged(spec["tag"])
        if spec.get("parent"):
            qs = qs.filter(parent_id=spec["parent"])
        if spec.get("created_after"):
            qs = qs.filter(created_at__gte=_moment(spec["created_after"]))
        if spec.get("created_before"):
            qs = qs.filter(created_at__lt=_moment(spec["created_before"]))
        if spec.get("q"):
            term = str(spec["q"]).strip()
            if len(term) >= TEXT_SEARCH_MIN:
                qs = qs.alias(th_args_text=Cast("args", output_field=models.TextField()))  # type: ignore[assignment]
            qs = qs.filter(_search_condition(term))
        if spec.get("warning"):
            qs = qs.with_warning(str(spec["warning"]))
        if spec.get("related"):
            from django_tasks_hub.insight.relations import content_type_of, parse_key

            model, pk = parse_key(str(spec["related"]))
            qs = qs.related_to(content_type_of(model, qs.db), pk)
        return qs

    def related_to(self, content_type: Any, object_id: Any) -> TaskQuerySet:
        """Tasks linked to one business object (its content type and primary key)."""
        links = TaskRelation.objects.using(self.db).for_key(content_type, object_id)
        return self.filter(pk__in=links.values("task_id"))

    def with_warning(self, code: str | None = None) -> TaskQuerySet:
        """Tasks whose current publish has a transaction warning (any, or ``code``)."""
        flagged = TaskTransaction.objects.using(self.db).with_warning(code)
        return self.filter(Exists(flagged.filter(broker_id=OuterRef("broker_id"))))

    def with_transaction(self) -> TaskQuerySet:
        """Annotated with the facts of the transaction each task was published in, read by
        ``warnings`` with no query per row (one indexed subquery per fact)."""
        return self.annotate(**_transaction_annotations(self.db))


#: The keys of a bulk filter spec: the filters the task list (admin and API) narrows by.
BULK_FILTER_KEYS = (
    "status",
    "name",
    "tag",
    "parent",
    "created_after",
    "created_before",
    "q",
    "warning",
    "related",
)


def _moment(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


#: Shortest search term looked for inside errors and arguments: a trigram index needs three
#: characters, and a shorter term would scan the table (shorter: ids and names only).
TEXT_SEARCH_MIN = 3


def _search_condition(term: str) -> Q:
    """The task list's search as one condition, as the admin's search answers it: an id, a
    broker id, part of a task name, or (from ``TEXT_SEARCH_MIN`` characters) text in the error
    or the arguments (``th_args_text``, aliased by the caller)."""
    term = term.strip()
    condition = Q(broker_id=term) | Q(name__icontains=term)
    with contextlib.suppress(ValueError):
        condition |= Q(pk=uuid.UUID(term))
    if len(term) >= TEXT_SEARCH_MIN:
        condition |= Q(error__icontains=term) | Q(th_args_text__icontains=term)
    return condition


class TaskRunQuerySet(models.QuerySet):
    """Query logic for runs."""

    def of_schedules(self, names: list[str] | None = None) -> TaskRunQuerySet:
        """Runs sent by a periodic schedule (any of ``names``), first attempts only."""
        qs = self.exclude(schedule="").filter(retries=0, delivery=0)
        return qs if names is None else qs.filter(schedule__in=names)

    def sent_by_scheduler(self) -> TaskRunQuerySet:
        """Runs that a scheduler sent at a fire time (not a person's "run now")."""
        return self.filter(schedule_origin=ScheduleOrigin.BEAT)

    def active(self) -> TaskRunQuerySet:
        """Runs whose status is an active one (queued, running, waiting for a retry)."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> TaskRunQuerySet:
        """Runs whose status is a terminal one."""
        return self.filter(status__in=TERMINAL_STATUSES)

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

    def processing(self) -> TaskRunQuerySet:
        """Runs still processing: what reconcile checks."""
        return self.filter(status=TaskStatus.PROCESSING)

    def pending(self) -> TaskRunQuerySet:
        """Runs whose message no worker has reported starting yet."""
        return self.filter(status=TaskStatus.PENDING)

    def superseded(self) -> TaskRunQuerySet:
        """Runs that are not their task's latest run (a newer run of the same task exists)."""
        newer = self.model._default_manager.filter(
            task_id=OuterRef("task_id"), pk__gt=OuterRef("pk")
        )
        return self.filter(Exists(newer))

    def with_transaction(self) -> TaskRunQuerySet:
        """Annotated like :meth:`TaskQuerySet.with_transaction`, for ``TaskRun.warnings``."""
        return self.annotate(**_transaction_annotations(self.db))

    def prunable(self, finished_before: datetime.datetime) -> TaskRunQuerySet:
        """Ended runs older than ``finished_before`` that are not their task's latest run."""
        ended = self.exclude(status__in=RUN_OPEN_STATUSES).filter(finished_at__lt=finished_before)
        return ended.superseded()


#: The facts of TaskTransaction that ``warnings`` reads, as annotation names.
_TX_FACTS = {
    "_tx_outcome": "outcome",
    "_tx_ended_at": "ended_at",
    "_tx_first_started_at": "first_started_at",
    "_tx_started_before_commit": "started_before_commit",
    "_tx_alias": "alias",
}


def _transaction_annotations(db: str | None) -> dict[str, Subquery]:
    rows = TaskTransaction.objects.using(db).filter(broker_id=OuterRef("broker_id"))
    return {name: Subquery(rows.values(field)[:1]) for name, field in _TX_FACTS.items()}


def _warnings_of(row: Any) -> list[dict[str, str]]:
    """The transaction warnings of a task or run, from its annotations or one query."""
    if not hasattr(row, "_tx_outcome"):
        found = TaskTransaction.objects.filter(broker_id=row.broker_id).first()
        return found.warnings if found is not None else []
    facts = [getattr(row, name) for name in _TX_FACTS]
    return transaction_warnings(*facts)


# The fields below are built by functions because the concrete tables index them differently
# from AbstractTask. Every index is maintained on each insert and, as the status columns are
# indexed, on each update too: the recorder writes a task row and a run row at publish, start
# and end, so an index no query needs is paid for several times per task. Task and TaskRun
# therefore index their user and parent columns only where they are set (most tasks are
# published by code, with no user and no parent), and Task keeps its broker id unique by a
# constraint, which on PostgreSQL spares it the second, ``varchar_pattern_ops`` index that
# ``unique=True`` adds for LIKE queries none of the hub makes. AbstractTask keeps plain
# indexes, which need no names, so a project's subclass gets working indexes without any.


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
    schedule = models.CharField(
        _("schedule"),
        max_length=200,
        blank=True,
        default="",
        help_text=_("The periodic schedule that sent it; empty for a task sent by hand."),
    )

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
        relations: RelatedManager[TaskRelation]

    @property
    def warnings(self) -> list[dict[str, str]]:
        """Transaction mistakes of the task's current publish: ``code`` and ``message`` each."""
        return _warnings_of(self)


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
    db_queries = models.PositiveIntegerField(
        _("database queries"),
        null=True,
        blank=True,
        help_text=_("SQL queries the task body made, on every database (savepoints and the "
                    "hub's own writes not counted)."),
    )  # fmt: skip
    db_time = models.FloatField(
        _("database time (seconds)"),
        null=True,
        blank=True,
        help_text=_("Time the task body spent in those queries."),
    )
    memory_growth = models.PositiveBigIntegerField(
        _("memory growth (bytes)"),
        null=True,
        blank=True,
        help_text=_("How much the run raised its process's peak resident memory."),
    )
    release = models.CharField(
        _("release"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The release the worker ran (TASKS_HUB['RELEASE'])."),
    )
    schedule = models.CharField(
        _("schedule"),
        max_length=200,
        blank=True,
        default="",
        help_text=_("The periodic schedule that sent it; empty for a task sent by hand."),
    )
    schedule_origin = models.CharField(
        _("schedule origin"),
        max_length=8,
        blank=True,
        default=ScheduleOrigin.NONE,
        choices=ScheduleOrigin.choices,
        help_text=_("Sent by its scheduler at a fire time, or by a person's run now."),
    )

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
            # The runs of each schedule, by publish time: the fire-time check and the
            # schedules page. Most runs are sent by hand and have no entry.
            models.Index(
                fields=["schedule", "queued_at"],
                name="th_run_schedule_idx",
                condition=~Q(schedule=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.attempt} [{self.status}]"

    @property
    def warnings(self) -> list[dict[str, str]]:
        """Transaction mistakes of the publish this run belongs to (``code``, ``message``)."""
        return _warnings_of(self)

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
            "db_queries": self.db_queries,
            "db_time": self.db_time,
            "memory_growth": self.memory_growth,
            "release": self.release,
        }


class WorkerQuerySet(models.QuerySet):
    """Query logic for workers."""

    def seen_since(self, moment: datetime.datetime) -> WorkerQuerySet:
        """Workers whose last heartbeat is at or after ``moment``: alive, as far as we know."""
        return self.filter(last_seen__gte=moment)

    def silent_since(self, moment: datetime.datetime) -> WorkerQuerySet:
        """Workers whose last heartbeat is before ``moment`` (stopped, or gone)."""
        return self.filter(last_seen__lt=moment)

    def beating(self, now: datetime.datetime | None = None) -> WorkerQuerySet:
        """Workers running now, as far as their heartbeats say: not stopped, and a heartbeat
        within the last two ``WORKER_HEARTBEAT_SECONDS`` (one late beat is not a death)."""
        interval = float(hub_settings.WORKER_HEARTBEAT_SECONDS or 0)
        since = (now or timezone.now()) - datetime.timedelta(seconds=2 * interval)
        return self.filter(stopped_at=None).seen_since(since)

    def with_acknowledged(self) -> WorkerQuerySet:
        """Workers whose last heartbeat listed acknowledged messages still running."""
        return self.exclude(acknowledged=[])


class Worker(models.Model):
    """A Celery worker as it last reported itself: its trace of life, written by the worker's
    main process every ``WORKER_HEARTBEAT_SECONDS``.

    Reconcile counts a crash from ``last_seen``; the workers page shows the rest.
    """

    hostname = models.CharField(
        _("hostname"), max_length=255, unique=True, help_text=_("Celery node name.")
    )
    pid = models.PositiveIntegerField(_("process id"), null=True, blank=True)
    pool = models.CharField(
        _("pool"), max_length=32, blank=True, default="", help_text=_("prefork, threads, solo...")
    )
    concurrency = models.PositiveIntegerField(_("concurrency"), null=True, blank=True)
    queues = models.JSONField(
        _("queues"), default=list, blank=True, help_text=_("The queues it consumes.")
    )
    software = models.CharField(
        _("software"), max_length=64, blank=True, default="", help_text=_("Celery's version.")
    )
    processed = models.PositiveBigIntegerField(
        _("tasks processed"), default=0, help_text=_("Tasks its pool ran since it started.")
    )
    acknowledged = models.JSONField(
        _("acknowledged messages"),
        default=list,
        blank=True,
        help_text=_(
            "Broker ids of the messages it had acknowledged and was running when it last wrote "
            "this row: if it dies, no broker delivers them again."
        ),
    )
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    last_seen = models.DateTimeField(_("last seen"), default=timezone.now)
    stopped_at = models.DateTimeField(
        _("stopped at"),
        null=True,
        blank=True,
        help_text=_("When it shut down cleanly; empty while it runs or if it died."),
    )

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ("hostname",)
        indexes = [models.Index(fields=["last_seen"], name="th_worker_last_seen_idx")]
        permissions = [
            ("resize_worker_pool", _("Can grow and shrink a worker's pool")),
            ("shutdown_worker", _("Can shut down a worker")),
        ]

    def __str__(self) -> str:
        return self.hostname

    def is_fresh(self, since: datetime.datetime) -> bool:
        """Whether it runs and beat at or after ``since``: alive, as far as its row says."""
        return self.stopped_at is None and self.last_seen >= since


class QueuePauseQuerySet(models.QuerySet):
    """Query logic for queue pauses."""

    def names(self) -> set[str]:
        """The names of the queues paused now."""
        return set(self.values_list("queue", flat=True))


class QueuePause(models.Model):
    """A queue an operator paused: no worker consumes it until it is resumed.

    Celery's ``cancel_consumer`` changes only the memory of the workers running now; this row
    is what a worker that starts later reads, so it does not consume the queue either.
    Its admin is the queues page, which is why its plural name is "queues".
    """

    queue = models.CharField(_("queue"), max_length=255, unique=True)
    workers = models.JSONField(
        _("workers"),
        default=list,
        blank=True,
        help_text=_("The workers that consumed it when it was paused: resume gives it back."),
    )
    prefetched = models.PositiveIntegerField(
        _("prefetched"),
        null=True,
        blank=True,
        help_text=_("Tasks the workers had already prefetched from it, which still start."),
    )
    paused_at = models.DateTimeField(_("paused at"), default=timezone.now)
    paused_by = _user_field(_("paused by"), db_index=False)

    objects = QueuePauseQuerySet.as_manager()

    class Meta:
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        ordering = ("queue",)
        permissions = [("pause_queue", _("Can pause and resume a queue"))]
        indexes = [_where_set("paused_by", "th_queuepause_paused_by_idx")]

    def __str__(self) -> str:
        return self.queue


class ScheduleSource(models.TextChoices):
    """Where a schedule is defined."""

    BEAT_SCHEDULE = "beat_schedule", _("beat_schedule")
    DJANGO_CELERY_BEAT = "django_celery_beat", _("django-celery-beat")


class ScheduleQuerySet(models.QuerySet):
    """Query logic for schedules."""

    def enabled(self) -> ScheduleQuerySet:
        """Schedules whose fire times are checked."""
        return self.filter(enabled=True)

    def due(self, now: datetime.datetime) -> ScheduleQuerySet:
        """Enabled schedules with a fire time whose grace has passed: what the check decides."""
        return self.enabled().filter(decide_at__lte=now)

    def needing_attention(self, since: datetime.datetime) -> ScheduleQuerySet:
        """Schedules that missed a fire time since ``since``, or whose last run failed.

        The overview shows them, and the schedules page sorts them first.
        """
        missed = ScheduleFire.objects.filter(
            schedule=OuterRef("pk"), outcome=FireOutcome.MISSED, fire_at__gte=since
        )
        last_status = (
            TaskRun.objects.of_schedules()
            .filter(schedule=OuterRef("name"))
            .order_by("-queued_at")
            .values("status")[:1]
        )
        return (
            self.enabled()
            .annotate(last_status=Subquery(last_status))
            .filter(
                Q(Exists(missed))
                | Q(last_status__in=[TaskStatus.FAILED, TaskStatus.LOST, TaskStatus.REFUSED])
            )
        )


class Schedule(models.Model):
    """A periodic schedule as the hub knows it: its definition, and where its check stands.

    Beat registers its schedules when it starts; the check (``tasks_hub reconcile``) also reads
    the project's ``CELERY_BEAT_SCHEDULE`` and django-celery-beat's ``PeriodicTask`` rows.
    """

    name = models.CharField(_("name"), max_length=200, unique=True)
    task = models.CharField(_("task name"), max_length=255)
    source = models.CharField(
        _("source"),
        max_length=24,
        choices=ScheduleSource.choices,
        default=ScheduleSource.BEAT_SCHEDULE,
    )
    spec = models.JSONField(
        _("specification"), default=dict, help_text=_("The schedule as data: every, crontab...")
    )
    description = models.CharField(_("schedule"), max_length=255, blank=True, default="")
    enabled = models.BooleanField(_("enabled"), default=True)
    first_seen = models.DateTimeField(_("first seen"), default=timezone.now)
    cursor = models.DateTimeField(
        _("checked through"),
        default=timezone.now,
        help_text=_("The fire time (or, for intervals, the run) the next fire time follows."),
    )
    next_fire_at = models.DateTimeField(_("next expected"), null=True, blank=True)
    decide_at = models.DateTimeField(
        _("decided at"),
        null=True,
        blank=True,
        help_text=_("When the grace of the next fire time ends."),
    )
    pending_miss_at = models.DateTimeField(
        _("missed, not caught up"),
        null=True,
        blank=True,
        help_text=_("The last fire time if it was missed: a catch-up run serves it, late."),
    )

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        ordering = ("name",)
        permissions = [
            ("run_schedule", _("Can run a schedule now")),
            ("enable_schedule", _("Can enable a schedule")),
            ("disable_schedule", _("Can disable a schedule")),
        ]
        indexes = [
            models.Index(
                fields=["decide_at"], name="th_schedule_decide_idx", condition=Q(enabled=True)
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ScheduleFire(models.Model):
    """One fire time of a schedule and its outcome: on time, late or missed.

    Not a task row: a missed fire time changes no task status and no task metric.
    """

    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(
        Schedule, verbose_name=_("schedule"), on_delete=models.CASCADE, related_name="fires"
    )
    fire_at = models.DateTimeField(_("fire time"))
    outcome = models.CharField(_("outcome"), max_length=8, choices=FireOutcome.choices)
    run = models.ForeignKey(
        TaskRun,
        verbose_name=_("run"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="+",
        help_text=_("The run that served it; empty when missed."),
    )
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    decided_at = models.DateTimeField(_("decided at"), default=timezone.now)

    class Meta:
        verbose_name = _("schedule fire time")
        verbose_name_plural = _("schedule fire times")
        ordering = ("-fire_at",)
        constraints = [
            models.UniqueConstraint(fields=["schedule", "fire_at"], name="th_fire_uniq"),
        ]
        indexes = [
            models.Index(fields=["schedule", "outcome", "-fire_at"], name="th_fire_outcome_idx"),
            models.Index(fields=["run"], name="th_fire_run_idx", condition=Q(run__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.fire_at:%Y-%m-%d %H:%M:%S} [{self.outcome}]"


# -- rollups: what the overview, the stats API and the metrics read --------------------------
# Written by database triggers (see django_tasks_hub/insight/rollups.py for why), folded from
# RollupDelta into the tables below by insight.rollups.fold(). Nothing deletes them when runs
# are pruned: they are the record of how task names behaved.

#: Upper bounds (seconds) of the runtime and queue-wait histogram buckets, the last one +Inf.
HISTOGRAM_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, float("inf"),
)  # fmt: skip
#: The rollup's histogram columns: ``r<i>`` counts runtimes in bucket i, ``w<i>`` waits.
RUNTIME_COLUMNS: tuple[str, ...] = tuple(f"r{i}" for i in range(len(HISTOGRAM_BOUNDS)))
WAIT_COLUMNS: tuple[str, ...] = tuple(f"w{i}" for i in range(len(HISTOGRAM_BOUNDS)))


class RollupDelta(models.Model):
    """A change the triggers saw, not yet folded into the rollups (an append-only journal).

    ``kind`` is ``task`` (``n`` tasks of ``name`` entered, or with a negative ``n`` left,
    ``status``) or ``run`` (a run of ``name`` ended in ``status`` at ``at``, with its runtime,
    wait and error; ``n`` is -1 when a later event replaced that end by another).
    """

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(_("kind"), max_length=8)
    n = models.IntegerField(_("count"), default=1)
    name = models.CharField(_("task name"), max_length=255)
    status = models.CharField(_("status"), max_length=16)
    at = models.DateTimeField(_("at"), null=True, blank=True)
    runtime = models.FloatField(_("runtime (seconds)"), null=True, blank=True)
    wait = models.FloatField(_("queue wait (seconds)"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=200, blank=True, default="")

    class Meta:
        verbose_name = _("rollup delta")
        verbose_name_plural = _("rollup deltas")

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.status} {self.n:+d}"


class RunRollupQuerySet(models.QuerySet):
    """Query logic for run rollups."""

    def span(self, seconds: int) -> RunRollupQuerySet:
        """Rollups of one bucket width: 60 (minutes), 3600 (hours) or 0 (all time)."""
        return self.filter(span=seconds)

    def since(self, moment: datetime.datetime) -> RunRollupQuerySet:
        """Buckets that start at or after ``moment``."""
        return self.filter(start__gte=moment)


class RunRollup(models.Model):
    """Runs of one task name that ended in one bucket of time: counts and histograms."""

    span = models.PositiveIntegerField(
        _("span (seconds)"), help_text=_("60: a minute, 3600: an hour, 0: all time.")
    )
    start = models.DateTimeField(_("bucket start"))
    name = models.CharField(_("task name"), max_length=255)
    ended = models.BigIntegerField(_("runs ended"), default=0)
    failed = models.BigIntegerField(_("runs failed"), default=0)
    runtime_count = models.BigIntegerField(_("runtimes counted"), default=0)
    runtime_sum = models.FloatField(_("runtime sum (seconds)"), default=0.0)
    wait_count = models.BigIntegerField(_("waits counted"), default=0)
    wait_sum = models.FloatField(_("wait sum (seconds)"), default=0.0)
    last_failure_at = models.DateTimeField(_("last failure"), null=True, blank=True)
    for _column in (*RUNTIME_COLUMNS, *WAIT_COLUMNS):
        locals()[_column] = models.BigIntegerField(default=0)
    del _column

    objects = RunRollupQuerySet.as_manager()

    class Meta:
        verbose_name = _("run rollup")
        verbose_name_plural = _("run rollups")
        constraints = [
            models.UniqueConstraint(fields=["span", "start", "name"], name="th_rollup_bucket_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.start:%Y-%m-%d %H:%M} +{self.span}s"


class ErrorRollup(models.Model):
    """Failed runs of one error text (``Type: message``, clipped) in one hour."""

    start = models.DateTimeField(_("hour"))
    error = models.CharField(_("error"), max_length=200)
    count = models.BigIntegerField(_("count"), default=0)
    last_seen = models.DateTimeField(_("last seen"), null=True, blank=True)

    class Meta:
        verbose_name = _("error rollup")
        verbose_name_plural = _("error rollups")
        constraints = [
            models.UniqueConstraint(fields=["start", "error"], name="th_error_bucket_uniq")
        ]

    def __str__(self) -> str:
        return self.error


class TaskCount(models.Model):
    """How many tasks of one name are in one status now."""

    name = models.CharField(_("task name"), max_length=255)
    status = models.CharField(_("status"), max_length=16, choices=TaskStatus.choices)
    count = models.BigIntegerField(_("count"), default=0)

    class Meta:
        verbose_name = _("task count")
        verbose_name_plural = _("task counts")
        constraints = [
            models.UniqueConstraint(fields=["name", "status"], name="th_task_count_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.status}: {self.count}"


class BulkJobStatus(models.TextChoices):
    """Where a bulk job is: waiting for its worker, going through its tasks, or ended."""

    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class BulkAction(models.TextChoices):
    """What a bulk job does to each task it matches."""

    RESTART = "restart", _("Restart")
    CANCEL = "cancel", _("Cancel")


class BulkJob(models.Model):
    """One "restart all matching" or "cancel all matching": who, what filter, how far it is.

    Its tasks are read again from ``filters`` in primary-key order, ``cursor`` being the last
    task of the last committed chunk; each task it touches is claimed once by a
    :class:`BulkJobItem` row, so a retried job or one whose worker died touches no task twice.
    Only one runner works on a job at a time: the one holding the lease.
    """

    action = models.CharField(_("action"), max_length=16, choices=BulkAction.choices)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=BulkJobStatus.choices,
        default=BulkJobStatus.PENDING,
    )
    model = models.CharField(
        _("task model"),
        max_length=100,
        default="django_tasks_hub.task",
        help_text=_("The app label and model name of the tasks it goes through."),
    )
    filters = models.JSONField(_("filters"), default=dict, blank=True)
    description = models.TextField(_("filter"), blank=True, default="")
    created_by = _user_field(_("created by"), db_index=False)
    background = models.BooleanField(
        _("in the background"),
        default=False,
        help_text=_("Run by a Celery worker rather than in the request that started it."),
    )
    total = models.PositiveIntegerField(
        _("matching"), default=0, help_text=_("Tasks matching the filter when it was started.")
    )
    processed = models.PositiveIntegerField(_("processed"), default=0)
    succeeded = models.PositiveIntegerField(_("changed"), default=0)
    skipped = models.PositiveIntegerField(_("skipped"), default=0)
    skip_reasons = models.JSONField(_("skip reasons"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    cursor = models.CharField(
        _("cursor"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The primary key of the last task of the last committed chunk."),
    )
    lease_owner = models.CharField(_("lease owner"), max_length=64, blank=True, default="")
    lease_expires = models.DateTimeField(_("lease expires"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("bulk job")
        verbose_name_plural = _("bulk jobs")
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["status", "-id"], name="th_bulkjob_status_idx"),
            _where_set("created_by", "th_bulkjob_created_by_idx"),
        ]
        permissions = [
            ("restart_matching", _("Can restart all tasks matching a filter")),
            ("cancel_matching", _("Can cancel all tasks matching a filter")),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        """Whether the job has ended (done or failed)."""
        return self.finished_at is not None

    @property
    def percent(self) -> float:
        """How far the job is, from 0 to 100."""
        if self.status == BulkJobStatus.DONE:
            return 100.0
        if not self.total:
            return 0.0
        return max(0.0, min(100.0, 100.0 * self.processed / self.total))

    @property
    def is_resumable(self) -> bool:
        """Whether the job may be started again: it failed (the broker was down), or it stalled."""
        if self.status == BulkJobStatus.DONE:
            return False
        return self.status == BulkJobStatus.FAILED or self.is_stalled()

    def is_stalled(self, now: datetime.datetime | None = None) -> bool:
        """Whether the job has not ended and no runner holds its lease: it may be resumed."""
        now = now or timezone.now()
        if self.is_finished:
            return False
        return self.lease_expires is None or self.lease_expires < now


class BulkJobItem(models.Model):
    """A task claimed by a bulk job: the claim is what keeps a task from being done twice.

    ``before`` is the task's broker id when it was claimed; a restart gives the task a new one,
    so a claim left unfinished by a dead worker tells whether its restart went through.
    ``outcome`` is empty until the item is resolved.
    """

    job = models.ForeignKey(
        BulkJob, verbose_name=_("job"), on_delete=models.CASCADE, related_name="items"
    )
    task_id = models.UUIDField(_("task id"))
    before = models.CharField(_("broker id before"), max_length=255, blank=True, default="")
    outcome = models.CharField(_("outcome"), max_length=16, blank=True, default="")
    reason = models.CharField(_("reason"), max_length=255, blank=True, default="")
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)

    class Meta:
        verbose_name = _("bulk job item")
        verbose_name_plural = _("bulk job items")
        constraints = [
            models.UniqueConstraint(fields=["job", "task_id"], name="th_bulkitem_job_task_uniq"),
        ]
        indexes = [
            models.Index(
                fields=["job", "task_id"],
                name="th_bulkitem_open_idx",
                condition=Q(outcome=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.task_id} {self.outcome or 'claimed'}"


class TaskRelationQuerySet(models.QuerySet):
    """Query logic for the links between tasks and business objects."""

    def for_key(self, content_type: Any, object_id: Any) -> TaskRelationQuerySet:
        """Links to the object ``object_id`` of ``content_type`` (th_relation_object_idx)."""
        return self.filter(content_type=content_type, object_id=str(object_id))


class TaskRelation(models.Model):
    """A task linked to a model instance it works on (``submit(..., related=[obj])``).

    The object is named by its content type and primary key, with no foreign key to its table:
    deleting the object leaves the task and this link, the history of what ran for it.
    """

    id = models.BigAutoField(primary_key=True)
    # No index of its own: th_relation_uniq starts with it.
    task = models.ForeignKey(
        Task,
        verbose_name=_("task"),
        on_delete=models.CASCADE,
        related_name="relations",
        db_index=False,
    )
    content_type = models.ForeignKey(
        "contenttypes.ContentType",
        verbose_name=_("content type"),
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    object_id = models.CharField(
        _("object id"), max_length=255, help_text=_("The linked object's primary key, as text.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    #: The linked object, or ``None`` once it is deleted (the link and the task stay).
    obj = GenericForeignKey("content_type", "object_id")

    objects = TaskRelationQuerySet.as_manager()

    class Meta:
        verbose_name = _("related object")
        verbose_name_plural = _("related objects")
        constraints = [
            models.UniqueConstraint(
                fields=["task", "content_type", "object_id"], name="th_relation_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["content_type", "object_id"], name="th_relation_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_id} -> {self.task_id}"


class TransactionOutcome(models.TextChoices):
    """How the publisher's transaction ended, once it has."""

    COMMITTED = "committed", _("committed")
    ROLLED_BACK = "rolled_back", _("rolled back")


class TaskTransactionQuerySet(models.QuerySet):
    """Query logic for the transactions tasks were published in."""

    def started_before_commit(self) -> TaskTransactionQuerySet:
        """Publishes whose worker started before the commit was recorded."""
        return self.filter(started_before_commit=True)

    def rolled_back(self) -> TaskTransactionQuerySet:
        """Publishes from a transaction that rolled back."""
        return self.filter(outcome=TransactionOutcome.ROLLED_BACK)

    def with_warning(self, code: str | None = None) -> TaskTransactionQuerySet:
        """Publishes with any warning, or with the warning ``code``."""
        if code == WARNING_STARTED_BEFORE_COMMIT:
            return self.started_before_commit()
        if code == WARNING_ROLLED_BACK:
            return self.rolled_back()
        return self.filter(
            Q(started_before_commit=True) | Q(outcome=TransactionOutcome.ROLLED_BACK)
        )


#: The codes of the ``warnings`` of tasks and runs.
WARNING_STARTED_BEFORE_COMMIT = "started_before_commit"
WARNING_ROLLED_BACK = "published_in_rolled_back_transaction"
WARNING_CODES = (WARNING_STARTED_BEFORE_COMMIT, WARNING_ROLLED_BACK)


class TaskTransaction(models.Model):
    """The database transaction a task was published in, by broker id: how and when it ended,
    and whether a worker started the task before its commit was recorded.

    Only publishes made inside ``transaction.atomic()`` have a row. It is written outside the
    caller's transaction (after its commit, after its rollback, or by the worker), so it
    survives a rollback; see docs/insights.md.
    """

    id = models.BigAutoField(primary_key=True)
    broker_id = models.CharField(_("broker id"), max_length=255)
    alias = models.CharField(
        _("database"), max_length=64, help_text=_("The alias whose atomic() block published.")
    )
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=TransactionOutcome.choices, blank=True, default=""
    )
    ended_at = models.DateTimeField(
        _("ended at"), null=True, blank=True, help_text=_("Commit or rollback, publisher's clock.")
    )
    first_started_at = models.DateTimeField(
        _("first started at"), null=True, blank=True, help_text=_("Worker's clock.")
    )
    started_before_commit = models.BooleanField(
        _("started before commit"),
        default=False,
        help_text=_("A worker's start was recorded before the commit was."),
    )

    objects = TaskTransactionQuerySet.as_manager()

    class Meta:
        verbose_name = _("publishing transaction")
        verbose_name_plural = _("publishing transactions")
        constraints = [
            models.UniqueConstraint(fields=["broker_id"], name="th_tx_broker_id_uniq"),
        ]
        indexes = [
            models.Index(
                fields=["broker_id"],
                name="th_tx_warning_idx",
                condition=Q(started_before_commit=True) | Q(outcome="rolled_back"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broker_id} in {self.alias}: {self.outcome or 'open'}"

    @property
    def warnings(self) -> list[dict[str, str]]:
        """The ``warnings`` this publish gives its task and run (``code`` and ``message``)."""
        return transaction_warnings(
            self.outcome, self.ended_at, self.first_started_at, self.started_before_commit,
            self.alias,
        )  # fmt: skip


def transaction_warnings(
    outcome: str | None,
    ended_at: datetime.datetime | None,
    first_started_at: datetime.datetime | None,
    started_before_commit: bool | None,
    alias: str | None = None,
) -> list[dict[str, str]]:
    """The warnings of a publish from the facts of its transaction (``[]`` when there are none).

    ``started_before_commit`` is decided causally (the start was recorded first); the
    milliseconds compare two hosts' clocks, so they are shown as measured, not relied on.
    """
    where = f" on database {alias!r}" if alias else ""
    found: list[dict[str, str]] = []
    if outcome == TransactionOutcome.ROLLED_BACK:
        found.append(
            {
                "code": WARNING_ROLLED_BACK,
                "message": (
                    f"Sent from a transaction{where} that rolled back: the task ran for data "
                    "that never existed. Send it with delay_on_commit() or "
                    "transaction.on_commit()."
                ),
            }
        )
    if started_before_commit:
        gap = ""
        if ended_at is not None and first_started_at is not None:
            millis = (ended_at - first_started_at).total_seconds() * 1000
            gap = f" {millis:.0f} ms (by the two hosts' clocks)"
        found.append(
            {
                "code": WARNING_STARTED_BEFORE_COMMIT,
                "message": (
                    f"A worker started this run{gap} before the publishing transaction{where} "
                    "committed, so it may not have seen the data. Send it with "
                    "delay_on_commit() or transaction.on_commit()."
                ),
            }
        )
    return found
