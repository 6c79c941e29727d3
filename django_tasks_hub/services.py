"""restart(), cancel() and submit(): the only code that changes a task on request."""

from __future__ import annotations

import logging
import uuid
from typing import Any, TypeVar

from django.db import connections, router, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

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


def get_celery_app() -> Any:
    """The Celery app named by ``TASKS_HUB["CELERY_APP"]``, else Celery's current app."""
    path = hub_settings.CELERY_APP
    if path:
        app = import_string(path)
        return app
    from celery import current_app

    return current_app._get_current_object()


def _user_id(user: Any) -> Any:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def _lock(task: T | Any, model: type[T] | None = None) -> T:
    model = model or (type(task) if isinstance(task, AbstractTask) else Task)  # type: ignore[assignment]
    pk = task.pk if isinstance(task, AbstractTask) else task
    assert model is not None
    try:
        return model._default_manager.select_for_update().get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError) as exc:
        # A malformed id is as unknown as a missing one.
        raise TaskNotFound(f"No task with id {pk!s}.") from exc
    except Exception as exc:
        from django.core.exceptions import ValidationError

        if isinstance(exc, ValidationError):
            raise TaskNotFound(f"No task with id {pk!s}.") from exc
        raise


def _publish_options(task: AbstractTask) -> dict[str, Any]:
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

    Locks the row and refuses an active task (:class:`TaskNotRestartable`) or one whose
    Celery task name is no longer registered (:class:`UnknownTaskName`). The new run and its
    new broker id are written first; the message is sent once they are committed. If the
    broker refuses it, the run and the task are marked failed with the reason and
    :class:`BrokerUnavailable` is raised, so nothing stays pending that the broker never got.
    ``worker`` is the Celery task to send (default: the task registered under its name).
    """
    model = model or (type(task) if isinstance(task, AbstractTask) else Task)  # type: ignore[assignment]
    db = router.db_for_write(model)
    with transaction.atomic(using=db):
        locked: T = _lock(task, model)
        if locked.status in ACTIVE_STATUSES:
            raise TaskNotRestartable(
                f"Task {locked.pk} is {locked.status}; only an ended task can be restarted.",
                status=locked.status,
            )
        sender = worker or get_celery_app().tasks.get(locked.name)
        if sender is None:
            raise UnknownTaskName(
                f"Task name {locked.name!r} is not registered with the Celery app any more; "
                "it cannot be sent again.",
                status=locked.status,
            )
        now = timezone.now()
        broker_id = str(uuid.uuid4())
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
        _send(locked, sender, broker_id, user)

    if connections[db].in_atomic_block:
        # Called inside the caller's transaction: the run exists only once that commits.
        transaction.on_commit(lambda: _send_quietly(send), using=db)
    else:
        send()
    return locked


def _send_quietly(send: Any) -> None:
    try:
        send()
    except BrokerUnavailable:
        logger.warning("tasks-hub restart could not reach the broker; the run is marked failed")


def _send(task: AbstractTask, sender: Any, broker_id: str, user: Any) -> None:
    from django_tasks_hub.plugins.celery import USER_HEADER

    headers = {}
    if _user_id(user) is not None:
        headers[USER_HEADER] = _user_id(user)
    try:
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
        message = f"The broker could not be reached, so the task was not sent: {exc}"
        logger.warning("tasks-hub could not send %s[%s]: %s", task.name, broker_id, exc)
        now = timezone.now()
        type(task)._default_manager.filter(pk=task.pk, broker_id=broker_id).update(
            status=TaskStatus.FAILED, error=message, finished_at=now, updated_at=now
        )
        TaskRun.objects.filter(broker_id=broker_id).update(
            status=TaskStatus.FAILED, error=message, finished_at=now
        )
        task.status = TaskStatus.FAILED
        task.error = message
        task.finished_at = now
        raise BrokerUnavailable(message, status=TaskStatus.FAILED) from exc


def cancel(task: T | Any, user: Any = None, *, model: type[T] | None = None) -> T:
    """Cancel an active task and return it, now canceled.

    Locks the row and refuses an ended task (:class:`TaskNotCancelable`). The broker is told
    first (a running task's process gets ``TASKS_HUB["CANCEL_SIGNAL"]``); if it cannot be
    reached, :class:`BrokerUnavailable` is raised and the task is left as it was. Workers that
    start later load the cancelled ids at start-up, so the task never runs.
    """
    model = model or (type(task) if isinstance(task, AbstractTask) else Task)  # type: ignore[assignment]
    db = router.db_for_write(model)
    with transaction.atomic(using=db):
        locked: T = _lock(task, model)
        if locked.status in TERMINAL_STATUSES:
            raise TaskNotCancelable(
                f"Task {locked.pk} is {locked.status}; only a pending, processing or "
                "retrying task can be canceled.",
                status=locked.status,
            )
        running = locked.status == TaskStatus.PROCESSING
        try:
            get_celery_app().control.revoke(
                locked.broker_id, terminate=running, signal=hub_settings.CANCEL_SIGNAL
            )
        except Exception as exc:
            raise BrokerUnavailable(
                f"The broker could not be reached, so the task was not canceled: {exc}",
                status=locked.status,
            ) from exc
        now = timezone.now()
        who = getattr(user, "get_username", lambda: "")() if _user_id(user) else ""
        locked.status = TaskStatus.CANCELED
        locked.finished_at = now
        locked.updated_at = now
        locked.error = f"Canceled by {who}." if who else "Canceled."
        locked.save(update_fields=["status", "finished_at", "updated_at", "error"])
        if isinstance(locked, Task):
            TaskRun.objects.using(db).filter(
                task_id=locked.pk, broker_id=locked.broker_id
            ).open().update(
                status=TaskStatus.CANCELED,
                canceled_by_id=_user_id(user),
                finished_at=now,
                error=locked.error,
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
    returns.
    """
    from django_tasks_hub.plugins.celery import USER_HEADER

    if isinstance(celery_task, str):
        celery_task = get_celery_app().tasks[celery_task]
    headers = dict(options.pop("headers", None) or {})
    if _user_id(user) is not None:
        headers[USER_HEADER] = _user_id(user)
    result = celery_task.apply_async(args=args, kwargs=kwargs, headers=headers, **options)
    return Task.objects.filter(broker_id=result.id).first()
