"""restart(), cancel() and submit(): the only code that changes a task on request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from django_tasks_hub.buffer import write_through
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotRestartable,
    UnknownTaskName,
)
from django_tasks_hub.models import AbstractTask, Task, TaskRun
from django_tasks_hub.states import ACTIVE_STATUSES, TERMINAL_STATUSES, RunTrigger, TaskStatus

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=AbstractTask)

__all__ = ["cancel", "get_celery_app", "restart", "submit"]


def get_celery_app() -> Any:
    """Return the Celery app named by ``TASKS_HUB["CELERY_APP"]``, else Celery's current app."""
    path = hub_settings.CELERY_APP
    if path:
        return import_string(path)
    from celery import current_app

    return cast(Any, current_app)._get_current_object()


def _registered(app: Any, name: str) -> Any:
    """The Celery task registered as ``name``, or ``None``.

    Celery's autodiscovery is lazy: a web process that never imported the tasks modules has
    none of them registered, so they are imported once before a name is called unknown.
    """
    task = app.tasks.get(name)
    if task is None:
        app.loader.import_default_modules()
        task = app.tasks.get(name)
    return task


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


def _broker_error(exc: BaseException, what: str, **detail: Any) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"The broker could not be reached, so the task was not {what}: {str(exc).rstrip('.')}. "
        "Check that the broker is running, then try again.",
        **detail,
    )


def _connect(app: Any) -> Any:
    """A broker connection, established with bounded retries so a dead broker fails fast.

    Without the bounds kombu retries a refused connection forever, and a broker that accepts
    the connection but never answers blocks a socket read forever: either would hang the
    request (and, for cancel, keep the task row locked) for as long as the broker is down.
    """
    policy = hub_settings.PUBLISH_RETRY_POLICY
    seconds = float(hub_settings.BROKER_TIMEOUT)
    conn = app.connection_for_write(connect_timeout=seconds)
    if conn.transport_cls in ("redis", "rediss", "sentinel"):
        # The Redis transport ignores connect_timeout: its socket timeouts are options.
        conn.transport_options = {
            **conn.transport_options,
            "socket_connect_timeout": seconds,
            "socket_timeout": seconds,
        }
    try:
        conn.ensure_connection(
            max_retries=policy.get("max_retries", 2),
            interval_start=policy.get("interval_start", 0),
            interval_step=policy.get("interval_step", 0.2),
            interval_max=policy.get("interval_max", 0.5),
            timeout=seconds,
        )
    except BaseException:
        conn.release()
        raise
    return conn


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
    with transaction.atomic(using=db):
        locked: T = _lock(task, model)
        if locked.status in ACTIVE_STATUSES:
            raise TaskNotRestartable(
                f"Task {locked.pk} is {locked.status}; only an ended task can be restarted. "
                "Cancel it first, or wait until it ends.",
                status=locked.status,
            )
        sender = worker or _registered(get_celery_app(), locked.name)
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
        locked.status = TaskStatus.PENDING
        locked.broker_id = broker_id
        locked.retries = 0
        locked.attempts += 1
        locked.result = None
        locked.error = ""
        locked.traceback = ""
        locked.progress = None
        locked.started_at = None
        locked.finished_at = None
        locked.worker = ""
        locked.updated_at = now
        locked.save(
            update_fields=[
                "status", "broker_id", "retries", "attempts", "result", "error", "traceback",
                "progress", "started_at", "finished_at", "worker", "updated_at",
            ]
        )  # fmt: skip
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
    from django_tasks_hub.plugins.celery import USER_HEADER

    headers: dict[str, Any] = {}
    if _user_id(user) is not None:
        headers[USER_HEADER] = _user_id(user)
    try:
        # A bounded connection first: the publish below uses the app's pooled connections,
        # whose timeouts are the app's own (unbounded by default for Redis).
        _connect(sender.app).release()
        sender.apply_async(
            args=task.args,
            kwargs=task.kwargs,
            task_id=broker_id,
            headers=headers,
            retry=True,
            retry_policy=hub_settings.PUBLISH_RETRY_POLICY,
            **_publish_options(task),
        )
    except Exception as exc:
        error = _broker_error(exc, "sent", status=previous["status"])
        logger.warning("tasks-hub could not send %s[%s]: %s", task.name, broker_id, exc)
        now = timezone.now()
        # The restart's run stays in the history, failed with the reason; the task goes back
        # to what it was (conditional on the broker id: a later restart that did get through
        # is left alone). ``attempts`` keeps counting the failed run, so runs == attempts.
        _rows(task).filter(broker_id=broker_id).update(**previous, updated_at=now)
        TaskRun.objects.filter(broker_id=broker_id).open().update(
            status=TaskStatus.FAILED, error=error.message, finished_at=now
        )
        for field, value in previous.items():
            setattr(task, field, value)
        raise error from exc


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
    with transaction.atomic(using=db):
        locked: T = _lock(task, model)
        if locked.status in TERMINAL_STATUSES:
            raise TaskNotCancelable(
                f"Task {locked.pk} is {locked.status}; only a pending, processing or "
                "retrying task can be canceled. Restart it to run it again.",
                status=locked.status,
            )
        try:
            conn = _connect(app)
        except Exception as exc:
            raise _broker_error(exc, "canceled", status=locked.status) from exc
        try:
            # terminate even when the row says pending: a worker may have just started it,
            # and a task that is not running is only added to the revoked set.
            app.control.revoke(
                locked.broker_id,
                terminate=True,
                signal=hub_settings.CANCEL_SIGNAL,
                connection=conn,
            )
        except Exception as exc:
            raise _broker_error(exc, "canceled", status=locked.status) from exc
        finally:
            conn.release()
        now = timezone.now()
        who = user.get_username() if _user_id(user) is not None else ""
        message = f"Canceled by {who}." if who else "Canceled."
        locked.status = TaskStatus.CANCELED
        locked.finished_at = now
        locked.updated_at = now
        locked.error = message
        locked.save(update_fields=["status", "finished_at", "updated_at", "error"])
        if isinstance(locked, Task):
            TaskRun.objects.using(db).filter(task_id=locked.pk).open().update(
                status=TaskStatus.CANCELED,
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
    **options: Any,
) -> Task | None:
    """Send ``celery_task`` (a task object or a registered name) and return its task row.

    Like ``apply_async`` but records ``user`` as the task's creator. Returns ``None`` for a
    task tagged ``skip_db``. In eager mode the row is written when the task runs, before this
    returns. :class:`UnknownTaskName` when a name is not registered.
    """
    from django_tasks_hub.plugins.celery import USER_HEADER

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
    # The row is returned: written in the publish signal, whatever WRITE_BEHIND says.
    with write_through():
        result = celery_task.apply_async(args=args, kwargs=kwargs, headers=headers, **options)
    return Task.objects.filter(broker_id=result.id).first()
