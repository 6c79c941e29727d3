"""restart(), cancel(), submit() and the bulk jobs: the only code that changes a task on request."""

from __future__ import annotations

import datetime
import functools
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from django.apps import apps
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import OperationalError, connections, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_tasks_hub import broker, transitions
from django_tasks_hub.broker import USER_HEADER, get_celery_app
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    BulkFilterError,
    BulkJobNotResumable,
    DatabaseUnavailable,
    ScheduleNotControllable,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)
from django_tasks_hub.insight.relations import RELATED_HEADER, key_of
from django_tasks_hub.locking import write_transaction
from django_tasks_hub.models import (
    BULK_FILTER_KEYS,
    AbstractTask,
    BulkAction,
    BulkJob,
    BulkJobItem,
    BulkJobStatus,
    Schedule,
    ScheduleSource,
    Task,
    TaskRun,
)
from django_tasks_hub.recorder.buffer import write_through
from django_tasks_hub.states import RunTrigger, TaskStatus

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=AbstractTask)
F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "BULK_TASK_NAME",
    "cancel",
    "clean_bulk_filter",
    "get_celery_app",
    "preview_bulk",
    "restart",
    "resume_bulk",
    "run_bulk",
    "start_bulk",
    "submit",
]


def _user_id(user: Any) -> Any:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def _model_of(task: Any, model: type[T] | None) -> type[AbstractTask]:
    if model is not None:
        return model
    return type(task) if isinstance(task, AbstractTask) else Task


def _lock(task: Any, model: type[T]) -> T:
    """The task row, locked until the end of the transaction; :class:`TaskNotFound` if none."""
    pk = task.pk if isinstance(task, AbstractTask) else task
    try:
        return cast(T, model._default_manager.select_for_update().get(pk=pk))
    except (ObjectDoesNotExist, ValidationError, ValueError, TypeError, OverflowError) as exc:
        # A malformed id is as unknown as a missing one: both answer "no such task".
        raise TaskNotFound(f"No task with id {str(pk)[:100]!r}.", task_id=str(pk)[:100]) from exc


def _rows(task: AbstractTask) -> QuerySet[Any]:
    """The table holding ``task``'s status: the parent table for tasks built on :class:`Task`."""
    manager = Task.objects if isinstance(task, Task) else type(task)._default_manager
    return manager.filter(pk=task.pk)


def _database_errors(what: str) -> Callable[[F], F]:
    """A database that is down, or locked past its busy timeout, answers
    :class:`DatabaseUnavailable` with what to do, never a bare ``OperationalError``."""

    def decorate(service: F) -> F:
        @functools.wraps(service)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return service(*args, **kwargs)
            except OperationalError as exc:
                logger.warning("tasks-hub could not %s a task: %s", what, exc)
                raise DatabaseUnavailable(
                    f"The database could not be written, so the task was not {what}ed: "
                    f"{str(exc).rstrip('.')}. Try again in a moment; if it keeps happening, "
                    "check the database (on SQLite, see 'SQLite' in docs/operations.md)."
                ) from exc

        return guarded  # type: ignore[return-value]

    return decorate


def _broker_error(exc: BaseException, what: str, **detail: Any) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"The broker could not be reached, so the task was not {what}: {str(exc).rstrip('.')}. "
        "Check that the broker is running, then try again.",
        **detail,
    )


def _publish_options(task: AbstractTask) -> dict[str, Any]:
    # Only the routing is replayed: an old eta or expiry would be wrong for a new run.
    saved = task.options or {}
    options: dict[str, Any] = {}
    exchange, routing_key = saved.get("exchange"), saved.get("routing_key")
    if routing_key and exchange in (None, "", routing_key):
        options["queue"] = routing_key
    elif routing_key:
        options.update(exchange=exchange, routing_key=routing_key)
    if saved.get("priority") is not None:
        options["priority"] = saved["priority"]
    return options


@_database_errors("restart")
def restart(
    task: T | Any, user: Any = None, *, worker: Any = None, model: type[T] | None = None
) -> T:
    """Send an ended task again as a new run and return it, now pending.

    ``task`` is a task instance or its id. Locks the row and refuses an active task
    (:class:`TaskNotRestartable`) or one whose Celery task name is no longer registered
    (:class:`UnknownTaskName`). The new run and its new broker id are written first; the
    message is sent once they are committed (when called inside a transaction, on its
    commit). If the broker refuses it, the new run is marked failed with the reason, the task
    is put back as it was, and :class:`BrokerUnavailable` is raised: nothing stays pending that
    the broker never got. ``worker`` is the Celery task to send (default: the task registered
    under the name).
    """
    model = _model_of(task, model)  # type: ignore[assignment]
    assert model is not None
    db = router.db_for_write(model)
    with write_transaction(db, in_caller_transaction=True):
        locked: T = _lock(task, model)
        if locked.is_active:
            raise TaskNotRestartable(
                f"Task {locked.pk} is {locked.status}; only an ended task can be restarted. "
                "Cancel it first, or wait until it ends.",
                status=locked.status,
            )
        sender = worker or broker.registered(get_celery_app(), locked.name)
        if sender is None:
            raise UnknownTaskName(
                f"Task name {locked.name!r} is not registered with the Celery app any more, "
                "so it cannot be sent again. Register the task, or submit a new one.",
                status=locked.status,
            )
        now = timezone.now()
        broker_id = str(uuid.uuid4())
        # What the task shows now, put back if the broker never gets the message: a broker
        # outage must not rewrite the outcome of the task's last real run.
        previous = {field: getattr(locked, field) for field in _RESTORED_ON_FAILURE}
        fields: dict[str, Any] = {
            "broker_id": broker_id, "retries": 0, "attempts": locked.attempts + 1,
            "result": None, "error": "", "traceback": "", "progress": None,
            "started_at": None, "finished_at": None, "worker": "", "updated_at": now,
        }  # fmt: skip
        # Conditional, like every status move; under the lock it always moves the row.
        transitions.restart_task(_rows(locked), **fields)
        locked.status = TaskStatus.PENDING
        for name, value in fields.items():
            setattr(locked, name, value)
        if isinstance(locked, Task):
            TaskRun.objects.using(db).create(
                task_id=locked.pk,
                name=locked.name,
                attempt=locked.attempts,
                broker_id=broker_id,
                trigger=RunTrigger.RESTART,
                triggered_by_id=_user_id(user),
                status=TaskStatus.PENDING,
                queued_at=now,
            )

    def send() -> None:
        _send(locked, sender, broker_id, user, previous)

    if connections[db].in_atomic_block:
        # Inside the caller's transaction the run exists only once that commits; a broker
        # failure then can only be logged (the run is still marked failed).
        transaction.on_commit(lambda: _send_quietly(send), using=db)
    else:
        send()
    return locked


def _send_quietly(send: Callable[[], None]) -> None:
    try:
        send()
    except BrokerUnavailable as exc:
        logger.warning("tasks-hub restart could not reach the broker: %s", exc.message)


#: The task fields a restart resets, restored as they were when its message cannot be sent.
_RESTORED_ON_FAILURE = (
    "status", "broker_id", "retries", "result", "error", "traceback", "progress",
    "started_at", "finished_at", "worker",
)  # fmt: skip


def _send(
    task: AbstractTask, sender: Any, broker_id: str, user: Any, previous: dict[str, Any]
) -> None:
    headers: dict[str, Any] = {}
    if _user_id(user) is not None:
        headers[USER_HEADER] = _user_id(user)
    try:
        broker.send(
            sender,
            task.args,
            task.kwargs,
            task_id=broker_id,
            headers=headers,
            **_publish_options(task),
        )
    except Exception as exc:
        error = _broker_error(exc, "sent", status=previous["status"])
        logger.warning("tasks-hub could not send %s[%s]: %s", task.name, broker_id, exc)
        now = timezone.now()
        # The restart's run stays in the history, failed with the reason; the task goes back
        # to what it was (conditional on the broker id: a later restart that did get through
        # is left alone). ``attempts`` keeps counting the failed run, so runs == attempts.
        transitions.undo_restart(_rows(task).filter(broker_id=broker_id), previous, updated_at=now)
        transitions.fail_unsent(
            TaskRun.objects.filter(broker_id=broker_id), error=error.message, finished_at=now
        )
        for field, value in previous.items():
            setattr(task, field, value)
        raise error from exc


@_database_errors("cancel")
def cancel(
    task: T | Any, user: Any = None, *, worker: Any = None, model: type[T] | None = None
) -> T:
    """Cancel an active task and return it, now canceled.

    ``task`` is a task instance or its id. Locks the row and refuses an ended task
    (:class:`TaskNotCancelable`). The broker is told first: every worker drops the message,
    and one running the task sends its process ``TASKS_HUB["CANCEL_SIGNAL"]``. If the broker
    cannot be reached, :class:`BrokerUnavailable` is raised and the task is left as it was.
    Then the task and its open run are marked canceled with the user and the time; workers
    that start later load the cancelled ids at start-up (rule 4), so the task never runs.
    ``worker`` is the Celery task whose app to use (default: ``get_celery_app()``).
    """
    model = _model_of(task, model)  # type: ignore[assignment]
    assert model is not None
    db = router.db_for_write(model)
    app = getattr(worker, "app", None) or get_celery_app()
    with write_transaction(db, in_caller_transaction=True):
        locked: T = _lock(task, model)
        if locked.is_terminal:
            raise TaskNotCancelable(
                f"Task {locked.pk} is {locked.status}; only a pending, processing or "
                "retrying task can be canceled. Restart it to run it again.",
                status=locked.status,
            )
        try:
            broker.revoke(app, locked.broker_id)
        except Exception as exc:
            raise _broker_error(exc, "canceled", status=locked.status) from exc
        now = timezone.now()
        who = user.get_username() if _user_id(user) is not None else ""
        message = f"Canceled by {who}." if who else "Canceled."
        fields = {"finished_at": now, "updated_at": now, "error": message}
        transitions.cancel_task(_rows(locked), **fields)
        locked.status = TaskStatus.CANCELED
        for name, value in fields.items():
            setattr(locked, name, value)
        if isinstance(locked, Task):
            transitions.cancel_runs(
                TaskRun.objects.using(db).filter(task_id=locked.pk),
                canceled_by_id=_user_id(user),
                finished_at=now,
                error=message,
            )
    return locked


def submit(
    celery_task: Any,
    args: Any = None,
    kwargs: Any = None,
    *,
    user: Any = None,
    related: Iterable[Any] = (),
    **options: Any,
) -> Task | None:
    """Send ``celery_task`` (a task object or a registered name) and return its task row.

    Like ``apply_async`` but records ``user`` as the task's creator and links the task to the
    ``related`` model instances (or ``app_label.model:pk`` keys): their admin pages
    (``RelatedTasksInline``) and ``?related=`` list it. Returns ``None`` for a task tagged
    ``skip_db``. In eager mode the row is written when the task runs, before this returns.
    :class:`UnknownTaskName` when a name is not registered; ``ValueError`` for an unsaved
    object.
    """
    if isinstance(celery_task, str):
        try:
            celery_task = get_celery_app().tasks[celery_task]
        except KeyError as exc:
            raise UnknownTaskName(
                f"Task name {celery_task!r} is not registered with the Celery app."
            ) from exc
    headers = dict(options.pop("headers", None) or {})
    if _user_id(user) is not None:
        headers[USER_HEADER] = _user_id(user)
    keys = [item if isinstance(item, str) else key_of(item) for item in related]
    if keys:
        headers[RELATED_HEADER] = keys
    # The row is returned: written in the publish signal, whatever WRITE_BEHIND says, and
    # outside a transaction of the caller (except on SQLite: see Recorder.record).
    with write_through():
        result = celery_task.apply_async(args=args, kwargs=kwargs, headers=headers, **options)
    return Task.objects.filter(broker_id=result.id).first()


# -- periodic schedules (django-celery-beat's) --------------------------------------------------


def _periodic_task(schedule: Schedule) -> Any:
    """The django-celery-beat ``PeriodicTask`` behind ``schedule``, or
    :class:`ScheduleNotControllable`."""
    from django_tasks_hub.schedules import django_celery_beat_installed

    if schedule.source != ScheduleSource.DJANGO_CELERY_BEAT or not django_celery_beat_installed():
        raise ScheduleNotControllable(
            f"Schedule {schedule.name!r} is defined in CELERY_BEAT_SCHEDULE: change it in the "
            "settings. Only django-celery-beat's schedules can be run, enabled or disabled here."
        )
    from django_celery_beat.models import PeriodicTask

    found = PeriodicTask.objects.filter(name=schedule.name).first()
    if found is None:
        raise ScheduleNotControllable(
            f"django-celery-beat has no periodic task named {schedule.name!r} any more."
        )
    return found


def run_schedule_now(schedule: Schedule, *, user: Any = None) -> Task | None:
    """Send the task of a django-celery-beat ``schedule`` now, as its "run now" does; returns
    its task row. The run carries the schedule, marked as a run now: it serves no fire time."""
    periodic = _periodic_task(schedule)
    import json

    headers = {
        **json.loads(periodic.headers or "{}"),
        broker.SCHEDULE_HEADER: schedule.name,
        broker.SCHEDULE_ORIGIN_HEADER: "run_now",
    }
    options = {
        name: value
        for name in ("queue", "exchange", "routing_key", "priority")
        if (value := getattr(periodic, name, None)) not in (None, "")
    }
    if broker.registered(get_celery_app(), periodic.task) is None:
        raise UnknownTaskName(f"Task name {periodic.task!r} is not registered with the Celery app.")
    try:
        broker.connect(get_celery_app()).release()
        return submit(
            periodic.task,
            json.loads(periodic.args or "[]"),
            json.loads(periodic.kwargs or "{}"),
            user=user,
            headers=headers,
            **options,
        )
    except (UnknownTaskName, BrokerUnavailable):
        raise
    except Exception as exc:
        raise _broker_error(exc, "sent") from exc


def set_schedule_enabled(schedule: Schedule, enabled: bool) -> Schedule:
    """Enable or disable a django-celery-beat ``schedule`` (its beat picks the change up); a
    schedule enabled again is checked from now on, not for the fire times it skipped."""
    from django_tasks_hub import schedules

    periodic = _periodic_task(schedule)
    with transaction.atomic(using=router.db_for_write(Schedule)):
        periodic.enabled = enabled
        periodic.save()
        return schedules.set_enabled(schedule, enabled)


# -- bulk by filter ---------------------------------------------------------------------------

#: The hub's Celery task that runs a bulk job in the background (``django_tasks_hub.tasks``).
BULK_TASK_NAME = "django_tasks_hub.run_bulk_job"

_EMPTY: tuple[Any, ...] = (None, "", [], ())


def clean_bulk_filter(spec: dict[str, Any], *, all_tasks: bool = False) -> dict[str, Any]:
    """``spec`` with its empty values dropped and its values in JSON form, ready to be stored.

    :class:`BulkFilterError` for a key that is not a filter of the task list, a status that
    does not exist, or, unless ``all_tasks``, a spec that narrows nothing: "restart all" must
    be asked for in so many words.
    """
    spec = {key: value for key, value in spec.items() if value not in _EMPTY}
    unknown = sorted(set(spec) - set(BULK_FILTER_KEYS))
    if unknown:
        raise BulkFilterError(
            f"{', '.join(unknown)} cannot narrow a bulk action; use {', '.join(BULK_FILTER_KEYS)}."
        )
    cleaned: dict[str, Any] = {}
    for key, value in spec.items():
        if value in _EMPTY:
            continue
        if key == "status":
            values = [value] if isinstance(value, str) else list(value)
            statuses = sorted({str(v) for v in values})
            wrong = [v for v in statuses if v not in TaskStatus.values]
            if wrong:
                raise BulkFilterError(
                    f"Unknown status {', '.join(wrong)}; use {', '.join(TaskStatus.values)}."
                )
            cleaned[key] = statuses
        elif key == "related" and isinstance(value, tuple):
            # The list's filter gives (model, pk): stored as the key it was given as.
            model, pk = value
            cleaned[key] = f"{model._meta.app_label}.{model._meta.model_name}:{pk}"
        elif hasattr(value, "isoformat"):
            cleaned[key] = value.isoformat()
        else:
            cleaned[key] = str(value)
    if not cleaned and not all_tasks:
        raise BulkFilterError(
            "No filter narrows the set, so this would touch every task. Filter the list "
            "(status, name, tag, dates or a search) first, or pass all=true to mean every task."
        )
    return cleaned


def describe_bulk_filter(spec: dict[str, Any]) -> str:
    """A cleaned spec in words, for the job's record: ``status: failed; name: reports.build``."""
    if not spec:
        return "every task"
    return "; ".join(
        f"{key}: {', '.join(value) if isinstance(value, list) else value}"
        for key, value in spec.items()
    )


def preview_bulk(spec: dict[str, Any], model: type[AbstractTask] = Task) -> int:
    """How many tasks ``spec`` (a cleaned spec) matches now: the count shown before a bulk job."""
    return cast(Any, model._default_manager).matching(spec).count()


def start_bulk(
    action: str,
    spec: dict[str, Any],
    user: Any = None,
    *,
    all_tasks: bool = False,
    description: str = "",
    model: type[AbstractTask] = Task,
    background: bool | None = None,
) -> BulkJob:
    """Record a bulk job that restarts or cancels every task ``spec`` matches, and start it.

    ``action`` is ``"restart"`` or ``"cancel"``. The job runs in this call when it matches
    at most ``TASKS_HUB["BULK_INLINE_MAX"]`` tasks (or ``background=False``), and is sent to a
    worker as the hub's Celery task otherwise; either way the returned job is its record.
    :class:`BulkFilterError` for a bad or missing filter (see :func:`clean_bulk_filter`);
    :class:`BrokerUnavailable` when the job cannot be sent (the job is then marked failed).
    """
    if action not in BulkAction.values:
        raise BulkFilterError(f"Unknown bulk action {action!r}; use restart or cancel.")
    cleaned = clean_bulk_filter(spec, all_tasks=all_tasks)
    total = preview_bulk(cleaned, model)
    if background is None:
        background = total > int(hub_settings.BULK_INLINE_MAX)
    job = BulkJob.objects.create(
        action=action,
        filters=cleaned,
        description=(description or describe_bulk_filter(cleaned))[:2000],
        created_by_id=_user_id(user),
        background=background,
        total=total,
        model=model._meta.label_lower,
    )
    logger.info("tasks-hub bulk %s #%s: %s tasks match %s", action, job.pk, total, cleaned)
    if not background:
        return run_bulk(job.pk)
    db = router.db_for_write(BulkJob)
    if connections[db].in_atomic_block:
        # The worker must find the job row: send once it is committed.
        transaction.on_commit(lambda: _send_bulk_quietly(job), using=db)
    else:
        _send_bulk(job)
    return job


def resume_bulk(job: BulkJob | int, user: Any = None) -> BulkJob:
    """Start a job again whose runner died or gave up; it goes on from its last chunk.

    :class:`BulkJobNotResumable` when the job has ended or a runner still holds its lease.
    The tasks it already touched are not touched again (their claims say so).
    """
    pk = job.pk if isinstance(job, BulkJob) else job
    with transaction.atomic(using=router.db_for_write(BulkJob)):
        locked = BulkJob.objects.select_for_update().get(pk=pk)
        if locked.is_finished and locked.status == BulkJobStatus.DONE:
            raise BulkJobNotResumable(f"Bulk job {pk} is done; there is nothing left to do.")
        if not locked.is_resumable:
            raise BulkJobNotResumable(
                f"Bulk job {pk} is still running (its runner holds it until "
                f"{locked.lease_expires:%H:%M:%S} UTC); wait for it, or until it stalls."
            )
        BulkJob.objects.filter(pk=pk).update(
            status=BulkJobStatus.PENDING, finished_at=None, error="", updated_at=timezone.now()
        )
    locked.refresh_from_db()
    logger.info("tasks-hub bulk job #%s resumed by %s", pk, _user_id(user))
    if not locked.background:
        return run_bulk(pk)
    _send_bulk(locked)
    return locked


def _send_bulk(job: BulkJob) -> None:
    sender = broker.registered(get_celery_app(), BULK_TASK_NAME)
    if sender is None:
        message = (
            f"The Celery task {BULK_TASK_NAME} is not registered, so the job cannot run in the "
            "background: let the Celery app import django_tasks_hub.tasks "
            "(app.autodiscover_tasks() does)."
        )
        _fail_job(job, message)
        raise BrokerUnavailable(message)
    try:
        broker.send(sender, [job.pk], {}, task_id=str(uuid.uuid4()), headers={})
    except Exception as exc:
        error = _broker_error(exc, "started")
        _fail_job(job, error.message)
        raise error from exc


def _send_bulk_quietly(job: BulkJob) -> None:
    try:
        _send_bulk(job)
    except BrokerUnavailable as exc:
        logger.warning("tasks-hub bulk job #%s could not be sent: %s", job.pk, exc.message)


def _fail_job(job: BulkJob, message: str, owner: str | None = None) -> None:
    now = timezone.now()
    rows = BulkJob.objects.filter(pk=job.pk)
    if owner is not None:
        rows = rows.filter(lease_owner=owner)
    rows.update(
        status=BulkJobStatus.FAILED,
        error=message[:5000],
        finished_at=now,
        updated_at=now,
        lease_owner="",
        lease_expires=None,
    )
    job.status, job.error, job.finished_at = BulkJobStatus.FAILED, message, now


class _LeaseLost(Exception):
    """Another runner took the job's lease: this one stops without writing anything more."""


def _take_lease(pk: int, owner: str) -> bool:
    now = timezone.now()
    expires = now + datetime.timedelta(seconds=float(hub_settings.BULK_LEASE_SECONDS))
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now) | Q(lease_owner=owner)
    taken = (
        BulkJob.objects.filter(pk=pk, finished_at__isnull=True)
        .filter(free)
        .update(
            lease_owner=owner,
            lease_expires=expires,
            status=BulkJobStatus.RUNNING,
            updated_at=now,
        )
    )
    return taken == 1


def run_bulk(job_id: int) -> BulkJob:
    """Go through a bulk job's tasks chunk by chunk and return the job, ended or left to resume.

    What the hub's Celery task runs. The runner first takes the job's lease (a job another
    runner holds is left alone). Each chunk of tasks, read in primary-key order after the
    cursor, is claimed with one :class:`BulkJobItem` row per task (a task claimed before is not
    claimed again); each open claim is then resolved, and the outcomes, the counts, the cursor
    and a renewed lease are committed together. A claim left open by a runner that died is
    resolved by looking at the task: a restart is known to have happened when the task's
    broker id is no longer the one claimed, a cancel when the task is canceled. So a task is
    restarted or cancelled once, however often the job is retried. A broker outage stops the
    job (failed, resumable); any other error leaves it to the Celery task's retry.
    """
    owner = uuid.uuid4().hex
    if not _take_lease(job_id, owner):
        return BulkJob.objects.get(pk=job_id)
    job = BulkJob.objects.select_related("created_by").get(pk=job_id)
    if job.started_at is None:
        job.started_at = timezone.now()
        BulkJob.objects.filter(pk=job.pk).update(started_at=job.started_at)
    model = cast(type[AbstractTask], apps.get_model(job.model))
    size = max(1, int(hub_settings.BULK_CHUNK_SIZE))
    # Tasks created after the job was asked for are not part of it.
    matching = (
        cast(Any, model._default_manager)
        .matching(job.filters)
        .filter(created_at__lte=job.created_at)
        .order_by("pk")
    )
    try:
        while True:
            chunk = matching.filter(pk__gt=job.cursor) if job.cursor else matching
            rows = list(chunk.values_list("pk", "broker_id", "status")[:size])
            if not rows:
                break
            _claim(job, rows)
            _resolve(job, model, [pk for pk, _b, _s in rows], owner, cursor=str(rows[-1][0]))
        # Claims whose task left the filter before its outcome was committed (a restarted
        # task is no longer "failed"): resolved by their ids.
        while open_ids := list(
            job.items.filter(outcome="").values_list("task_id", flat=True)[:size]
        ):
            _resolve(job, model, open_ids, owner, cursor=job.cursor)
    except _LeaseLost:
        logger.warning("tasks-hub bulk job #%s: another runner took it over", job.pk)
        return BulkJob.objects.get(pk=job.pk)
    except BrokerUnavailable as exc:
        _fail_job(job, exc.message, owner)
        logger.warning("tasks-hub bulk job #%s stopped: %s", job.pk, exc.message)
        return BulkJob.objects.get(pk=job.pk)
    except Exception:
        # Let the next attempt (the Celery task's retry, or a resume) take it at once.
        BulkJob.objects.filter(pk=job.pk, lease_owner=owner).update(lease_expires=None)
        raise
    now = timezone.now()
    BulkJob.objects.filter(pk=job.pk, lease_owner=owner).update(
        status=BulkJobStatus.DONE,
        finished_at=now,
        updated_at=now,
        lease_owner="",
        lease_expires=None,
    )
    logger.info(
        "tasks-hub bulk job #%s done: %s changed, %s skipped", job.pk, job.succeeded, job.skipped
    )
    return BulkJob.objects.get(pk=job.pk)


def _claim(job: BulkJob, rows: list[tuple[Any, str, str]]) -> None:
    """One claim per task of the chunk; a task claimed by an earlier attempt keeps its claim."""
    restart = job.action == BulkAction.RESTART
    BulkJobItem.objects.bulk_create(
        [
            BulkJobItem(job=job, task_id=pk, before=broker_id if restart else status)
            for pk, broker_id, status in rows
        ],
        ignore_conflicts=True,
    )


def _resolve(
    job: BulkJob, model: type[AbstractTask], task_ids: list[Any], owner: str, *, cursor: str
) -> None:
    """Resolve the open claims among ``task_ids``, then commit outcomes, counts and cursor."""
    claims = list(
        job.items.filter(task_id__in=task_ids, outcome="").values_list("pk", "task_id", "before")
    )
    outcomes: dict[tuple[str, str], list[int]] = {}
    for item_id, task_id, before in claims:
        outcomes.setdefault(_bulk_one(job, model, task_id, before), []).append(item_id)
    now = timezone.now()
    expires = now + datetime.timedelta(seconds=float(hub_settings.BULK_LEASE_SECONDS))
    reasons = dict(job.skip_reasons)
    succeeded, skipped = job.succeeded, job.skipped
    for (kind, reason), ids in outcomes.items():
        if kind == "done":
            succeeded += len(ids)
        else:
            skipped += len(ids)
            reasons[reason] = reasons.get(reason, 0) + len(ids)
    with transaction.atomic(using=router.db_for_write(BulkJob)):
        renewed = BulkJob.objects.filter(pk=job.pk, lease_owner=owner).update(
            processed=job.processed + len(claims),
            succeeded=succeeded,
            skipped=skipped,
            skip_reasons=reasons,
            cursor=cursor,
            lease_expires=expires,
            updated_at=now,
        )
        if not renewed:
            # The open claims stay open: the runner holding the lease now resolves them.
            raise _LeaseLost
        for (kind, reason), ids in outcomes.items():
            BulkJobItem.objects.filter(pk__in=ids).update(outcome=kind, reason=reason, done_at=now)
    job.processed += len(claims)
    job.succeeded, job.skipped, job.skip_reasons, job.cursor = succeeded, skipped, reasons, cursor


def _bulk_one(
    job: BulkJob, model: type[AbstractTask], task_id: Any, before: str
) -> tuple[str, str]:
    """Restart or cancel one claimed task, unless a previous attempt did; (outcome, reason)."""
    row = model._default_manager.filter(pk=task_id).values_list("broker_id", "status").first()
    if row is None:
        return "skipped", "deleted"
    broker_id, status = row
    user = job.created_by
    try:
        if job.action == BulkAction.RESTART:
            if broker_id != before:
                # Restarted since it was claimed: by this job before its runner died (its
                # outcome was not committed), or by someone else. Either way, not again.
                return "done", ""
            restart(task_id, user, model=model)
        else:
            if status == TaskStatus.CANCELED and before != TaskStatus.CANCELED:
                return "done", ""
            cancel(task_id, user, model=model)
    except (TaskNotRestartable, TaskNotCancelable) as exc:
        return "skipped", str(exc.status or status)
    except UnknownTaskName:
        return "skipped", "unregistered"
    except TaskNotFound:
        return "skipped", "deleted"
    return "done", ""
